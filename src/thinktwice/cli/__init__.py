"""The ``thinktwice`` command line. Thin: parses flags, looks up registries, calls the library.

Each command group lives in its own module with a ``register(app)`` function. User errors
(ThinktwiceError, and input files that are not UTF-8) print one line and exit with code 2; anything
else keeps its traceback.
"""

from __future__ import annotations

import importlib
import logging
import sys

import typer

from thinktwice.errors import ThinktwiceError

__all__ = ["app", "main"]

_COMMAND_MODULES = (
    "solve",
    "evaluate",
    "runs",
    "organism",
    "calibrate",
    "compare",
    "study",
    "serve",
    "critic",
    "train",
    "probe",
)

app = typer.Typer(
    name="thinktwice",
    help="Make a language model check its own work, and measure what that buys at matched compute.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _name in _COMMAND_MODULES:
    try:
        _mod = importlib.import_module(f"thinktwice.cli.{_name}")
    except ModuleNotFoundError as _e:  # a command module not written yet
        if _e.name != f"thinktwice.cli.{_name}":
            raise
        continue
    _mod.register(app)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    from rich.logging import RichHandler

    from thinktwice.cli.common import err  # logs go to stderr so --json output stays parseable

    logging.basicConfig(level=logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(show_path=False, show_time=False, console=err)])
    try:
        # standalone mode: click/typer print usage errors themselves and exit 2; anything else
        # propagates here
        app(args=argv, prog_name="thinktwice")
    except ThinktwiceError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except UnicodeDecodeError as e:  # an input file that is not text (readers should name it; this is the net)
        print(f"error: an input file is not valid UTF-8 ({e})", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
