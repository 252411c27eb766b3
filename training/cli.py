"""Command lines from argument dataclasses: one flag per field, its help from the field's
metadata, booleans as --x/--no-x, tuples as comma-separated lists."""

from __future__ import annotations

import argparse
import dataclasses
import typing


def _convert(typ):
    text = str(typ)
    if text.startswith("tuple"):
        inner = float if "float" in text else int if "int" in text else str
        return lambda s: tuple(inner(x) for x in str(s).split(",") if x)
    return {"int": int, "float": float}.get(text.replace(" | None", ""), str)


def parse_dataclass(cls, argv: list[str] | None, prog: str, doc: str | None):
    """Parse argv into an instance of the dataclass `cls`."""
    p = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f.metadata.get("help", "")
        if isinstance(default, bool):
            p.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default, help=help_text
            )
            continue
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        p.add_argument(
            flag,
            type=_convert(hints[f.name].__name__ if isinstance(hints[f.name], type) else f.type),
            default=default,
            help=f"{help_text} (default: {shown})",
        )
    return cls(**vars(p.parse_args(argv)))
