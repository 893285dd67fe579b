"""Options and helpers shared by the CLI command modules (backend flags, output, error exit)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console

from thinktwice.errors import ConfigError, StoreError

__all__ = [
    "BackendOpt", "BackendOptionsOpt", "StrategyOptionsOpt", "SplitOpt", "TaskOptionsOpt", "stored_config", "BaseUrlOpt", "ApiKeyOpt", "ModelOpt", "ConcurrencyOpt", "StoreOpt", "SeedOpt",
    "backend_from_options", "progress_bar", "run_async", "out", "err", "default_store", "parse_kv",
    "limit_option", "positive",
]

T = TypeVar("T")

out = Console()
err = Console(stderr=True)


def positive(flag: str, minimum: int = 1) -> Callable[[int | None], int | None]:
    """A typer callback refusing a value below ``minimum`` for ``flag`` (one-line ConfigError, exit 2)."""

    def check(value: int | None) -> int | None:
        if value is not None and value < minimum:
            what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
            raise ConfigError(f"{flag} must be {what}, got {value}")
        return value

    return check


def limit_option(default: int | None = None, help: str = "Use the first N problems.") -> Any:
    """The ``--limit/-l N`` option every command shares: N >= 1 (``--limit -1`` used to drop the last problem)."""
    return typer.Option(default, "--limit", "-l", help=help, callback=positive("--limit"))


BackendOpt = typer.Option(
    "llamacpp", "--backend", "-b",
    help="Backend spec: llamacpp[:GGUF], openai, organism:DIR, hf:PATH, scripted.",
)
BaseUrlOpt = typer.Option(
    None, "--base-url", help="OpenAI-compatible base URL(s), comma-separated (default: $OPENAI_BASE_URL)."
)
ApiKeyOpt = typer.Option(None, "--api-key", help="API key (default: $OPENAI_API_KEY).")
ModelOpt = typer.Option(None, "--model", "-m", help="Model name sent to the server.")
ConcurrencyOpt = typer.Option(16, "--concurrency", "-c", help="Concurrent problems / requests.",
                              callback=positive("--concurrency"))
StoreOpt = typer.Option(None, "--store", "-s", help="SQLite run store (default: $THINKTWICE_HOME/runs.db).")
SeedOpt = typer.Option(0, "--seed", help="Seed for every random choice.")
BackendOptionsOpt = typer.Option(
    None, "--backend-option", "-B", help="Backend constructor option key=value (JSON values), repeatable."
)
SplitOpt = typer.Option("test", "--split", help="Data split.")
TaskOptionsOpt = typer.Option(None, "--task-option", "-T", help="Task option key=value (JSON values), repeatable.")
StrategyOptionsOpt = typer.Option(
    None, "--option", "-o", help="Strategy option key=value (JSON values), repeatable."
)


def default_store(store: Path | None) -> Path:
    """The store path: the flag, else ``$THINKTWICE_HOME/runs.db``, else ``./runs.db``."""
    if store is not None:
        return store
    home = os.environ.get("THINKTWICE_HOME")
    return Path(home) / "runs.db" if home else Path("runs.db")


def stored_config(store: Path, run_id: int, kind: str) -> dict[str, Any]:
    """The config stored with run ``run_id`` (for --resume); refuses a run of another kind, and a store
    that does not exist (rather than creating an empty one)."""
    from thinktwice.eval.store import RunStore

    if not store.exists():
        raise StoreError(f"{store}: no such run store (--resume {run_id} needs the store the run was written to; "
                         "pass it with --store)")
    with RunStore(store, readonly=True) as st:
        info = st.get_run(run_id)
    if info.kind != kind:
        raise ConfigError(f"run {run_id} is a {info.kind!r} run, not a {kind} run")
    return dict(info.config)


def parse_kv(pairs: list[str] | None) -> dict[str, Any]:
    """Parse ``-o key=value`` options; values are read as JSON when they parse, else kept as text."""
    import json

    result: dict[str, Any] = {}
    for p in pairs or []:
        key, sep, value = p.partition("=")
        if not sep or not key:
            raise ConfigError(f"option {p!r} is not of the form key=value")
        try:
            result[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            result[key.replace("-", "_")] = value
    return result


def backend_from_options(
    backend: str,
    base_url: str | None = None,
    api_key: str | None = None,
    model: str | None = None,
    concurrency: int | None = None,
    **extra: Any,
) -> Any:
    """Build a backend from CLI flags; the environment is read here and nowhere below."""
    from thinktwice import lm

    name, _ = lm.parse_spec(backend)
    opts: dict[str, Any] = dict(extra)
    if name == "openai":
        urls = base_url or os.environ.get("OPENAI_BASE_URL")
        if not urls:
            raise ConfigError("backend 'openai' needs --base-url or OPENAI_BASE_URL")
        opts["base_urls"] = [u.strip() for u in urls.split(",") if u.strip()]
        opts["api_key"] = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        if model:
            opts["model"] = model
        if concurrency:
            opts["max_concurrency"] = concurrency
    elif model:
        opts["model"] = model
    return lm.create(backend, **opts)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def progress_bar(label: str, *fields: str, eta_label: bool = False) -> Any:
    """A rich progress bar on stderr (disabled when stderr is not a terminal): label, bar, done/total,
    the given text columns (``{task.fields[...]}`` templates), elapsed and remaining time."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    eta = (TextColumn("ETA"),) if eta_label else ()
    return Progress(
        TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), *(TextColumn(f) for f in fields),
        TimeElapsedColumn(), *eta, TimeRemainingColumn(), console=err, transient=False, disable=not err.is_terminal,
    )
