"""The `cartwise` command: lists its commands and runs each program as `python -m` does."""

from __future__ import annotations

import subprocess
import sys

from cartwise.cli import COMMANDS, main


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in COMMANDS)


def test_a_command_runs_its_module_with_the_same_flags(capsys):
    assert main(["simulate", "--help"]) == 0
    assert "--preset" in capsys.readouterr().out
    assert main(["no-such-command"]) == 2


def test_python_dash_m_cartwise_runs(tmp_path):
    # The console script is `cartwise.cli:main`; `python -m cartwise` is the same function.
    done = subprocess.run(
        [sys.executable, "-m", "cartwise", "retail-data", "verify"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "SHA-256 ok" in done.stdout
