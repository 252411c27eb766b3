"""Command lines from argument dataclasses (in the manner of transformers' HfArgumentParser).

A job's settings are one dataclass; each field carries its help in `field(metadata=...)`, so the
default is written once and `--help` shows it:

    @dataclass
    class RankerTrainArgs:
        epochs: int = arg(8, "passes over the training split (early stopping may end sooner)")

    args = parse_dataclass(RankerTrainArgs, argv, "python -m training.ranker", __doc__)

One flag per field (`out_dir` -> `--out-dir`); booleans are `--x/--no-x`; `tuple[...]` fields
take a comma-separated list; `X | None` fields default to None. A composite program
(training.all) adds several jobs' dataclasses to one parser under a prefix (`--ranker-epochs`)
with `add_arguments`, and rebuilds each job's dataclass with `from_namespace`.

Field metadata: `help` (required: every flag says what it does), and optionally `flag_kwargs`
(extra argparse keywords, e.g. an optional value with `nargs="?"`).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_MISSING: Any = dataclasses.MISSING


def arg(default: Any = _MISSING, help: str = "", **flag_kwargs: Any) -> Any:
    """A dataclass field with its help text (and argparse extras); tuples and lists are fine
    as defaults (a tuple is immutable, a list is copied per instance)."""
    meta = {"help": help, "flag_kwargs": flag_kwargs}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _converter(tp: Any) -> Callable[[str], Any]:
    tp = _strip_optional(tp)
    if typing.get_origin(tp) in (tuple, list):
        inner = _strip_optional((typing.get_args(tp) or (str,))[0])
        conv = inner if inner in (int, float) else str
        outer = typing.get_origin(tp)
        return lambda s: outer(conv(x) for x in str(s).split(",") if x.strip())
    if tp in (int, float, str, Path):
        return tp
    raise TypeError(f"no command-line conversion for {tp!r}")


def _shown(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return str(value)


def flag_name(field_name: str, prefix: str = "") -> str:
    return "--" + (prefix + field_name).replace("_", "-")


def add_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    prefix: str = "",
    skip: Iterable[str] = (),
) -> None:
    """One flag per field of `cls` (except `skip`), named `--<prefix><field>`."""
    hints = typing.get_type_hints(cls)
    skip = set(skip)
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        text = f.metadata.get("help")
        if not text:
            raise ValueError(f"{cls.__name__}.{f.name} has no help: use arg(default, help)")
        text = text.replace("%", "%%")
        kwargs = dict(f.metadata.get("flag_kwargs", {}))
        default = _default(f)
        dest = (prefix + f.name).replace("-", "_")
        if default is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = default
        if _strip_optional(hints[f.name]) is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs.setdefault("type", _converter(hints[f.name]))
            if "metavar" not in kwargs and "choices" not in kwargs:
                kwargs["metavar"] = f.name.upper()
        # The default, unless the help already says it in words ("default: last impression").
        if default is not dataclasses.MISSING and "default:" not in text:
            text = f"{text} (default: {_shown(default).replace('%', '%%')})"
        action = parser.add_argument(flag_name(f.name, prefix), dest=dest, help=text, **kwargs)
        if action.help.count("(default:") > 1:  # argparse versions that add it themselves
            action.help = text.rsplit(" (default:", 1)[0]


def from_namespace(cls: type[T], ns: argparse.Namespace, prefix: str = "", **fixed: Any) -> T:
    """The dataclass `cls` from the flags `add_arguments(..., cls, prefix)` added, plus
    `fixed` values for the fields it skipped."""
    values = dict(fixed)
    for f in dataclasses.fields(cls):
        dest = (prefix + f.name).replace("-", "_")
        if f.name not in values and hasattr(ns, dest):
            values[f.name] = getattr(ns, dest)
    return cls(**values)


def parser_for(cls: type, prog: str | None = None, doc: str | None = None):
    p = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(p, cls)
    return p


def parse_dataclass(
    cls: type[T], argv: list[str] | None = None, prog: str | None = None, doc: str | None = None
) -> T:
    """Parse `argv` (default: sys.argv[1:]) into an instance of the dataclass `cls`."""
    return from_namespace(cls, parser_for(cls, prog, doc).parse_args(argv))
