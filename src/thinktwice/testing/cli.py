"""Running the CLI in process from a test: the exit code and what it printed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["run_cli"]


def run_cli(args: Sequence[str], capsys: Any) -> tuple[int, str, str]:
    """``thinktwice ARGS`` in this process; returns (exit code, stdout, stderr) read from pytest's ``capsys``."""
    from thinktwice.cli import main

    code = 0
    try:
        main(list(args))
    except SystemExit as e:
        code = int(e.code or 0)
    cap = capsys.readouterr()
    return code, cap.out, cap.err
