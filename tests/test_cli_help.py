"""Every program's flags say what they do, and what they default to.

Each entry point (`python -m M` for every module with a `main`, and the `cartwise` command) is
run up to the moment it parses its arguments; the parser it built is then read, subcommands
included, without running the program.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("governance", "features", "training", "serving", "benchmarks", "cartwise")


def _programs() -> list[str]:
    out = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            tree = ast.parse(path.read_text())
            if any(
                isinstance(n, ast.FunctionDef) and n.name in ("main", "_main") for n in tree.body
            ):
                parts = path.relative_to(ROOT).with_suffix("").parts
                out.append(".".join(p for p in parts if p != "__init__"))
    return out


class _Parsed(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


def _parser_of(module: str, monkeypatch) -> argparse.ArgumentParser | None:
    """The program's parser; None for a dispatcher that passes its arguments on."""

    def stop(self, args=None, namespace=None):
        raise _Parsed(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", stop)
    main = _main(module)
    try:
        main(["--help"]) if inspect.signature(main).parameters else main()
    except _Parsed as parsed:
        return parsed.parser
    except SystemExit:
        pass
    return None


def _main(module: str):
    mod = importlib.import_module(module)
    return getattr(mod, "main", None) or mod._main


def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def _undocumented(parser: argparse.ArgumentParser) -> list[str]:
    bad = []
    for p in _parsers(parser):
        for a in p._actions:
            if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            name = "/".join(a.option_strings) or a.dest
            if not a.help or a.help == argparse.SUPPRESS:
                bad.append(f"{p.prog} {name}: no help")
                continue
            shows_default = "default" in a.help or "%(default)" in a.help
            flag_like = isinstance(a, (argparse._StoreTrueAction, argparse._StoreFalseAction))
            has_default = a.default not in (None, False, argparse.SUPPRESS) and a.option_strings
            if has_default and not flag_like and not a.required and not shows_default:
                bad.append(f"{p.prog} {name}: default {a.default!r} not in its help")
    return bad


PROGRAMS = _programs()


def test_the_programs_are_found():
    assert {"training.all", "training.ranker", "features.consistency", "cartwise.cli"} <= set(
        PROGRAMS
    )


@pytest.mark.parametrize("module", PROGRAMS)
def test_every_flag_has_help_with_its_default(module, monkeypatch, capsys):
    parser = _parser_of(module, monkeypatch)
    if parser is None:  # a dispatcher (cartwise, features.feast_cli): its --help is its usage
        monkeypatch.undo()
        main = _main(module)
        try:
            code = main(["--help"])
        except SystemExit as exc:
            code = exc.code
        out = capsys.readouterr().out
        assert code in (0, None) and ("usage" in out.lower() or module in out), out[:500]
        return
    assert not _undocumented(parser), "\n".join(_undocumented(parser))
