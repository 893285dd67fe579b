"""Where task data lives: explicit path > $THINKTWICE_DATA > shared/datasets > Hugging Face hub.

Data is read in place and never copied into the repository.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from thinktwice.errors import DataError

__all__ = ["ENV_VAR", "candidate_dirs", "find_file", "hub_rows", "load_rows", "read_jsonl"]

log = logging.getLogger(__name__)

ENV_VAR = "THINKTWICE_DATA"


def candidate_dirs(data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Data directories to try, in priority order."""
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    if os.environ.get(ENV_VAR):
        return [Path(os.environ[ENV_VAR]).expanduser()]
    dirs = [Path.cwd().parent / "shared" / "datasets"]
    # Walk up from the installed package: a checkout has shared/datasets next to the repository.
    for parent in Path(__file__).resolve().parents:
        if (parent / "pyproject.toml").exists() or (parent / ".git").exists():
            dirs.append(parent.parent / "shared" / "datasets")
            dirs.append(parent / "shared" / "datasets")
            break
    seen: list[Path] = []
    for d in dirs:
        if d not in seen:
            seen.append(d)
    return seen


def find_file(relpath: str, data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The first existing ``<dir>/relpath`` among :func:`candidate_dirs`, or None."""
    for d in candidate_dirs(data_dir):
        p = d / relpath
        if p.is_file():
            return p
    return None


def read_jsonl(path: str | os.PathLike[str], required: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Every object in a JSONL file; blank lines are skipped, anything else bad is a DataError.

    Raises:
        DataError: "FILE: no such file", "FILE:LINE: not valid UTF-8", "FILE:LINE: invalid JSON (...)", "FILE:LINE: missing
            field 'x'", "FILE:LINE: expected a JSON object", or "FILE: no records (empty file)".
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    rows: list[dict[str, Any]] = []
    with p.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{p}:{lineno}: not valid UTF-8 (byte {e.start + 1} of the line)") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{p}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{p}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            for name in required:
                if name not in obj or obj[name] is None:
                    raise DataError(f"{p}:{lineno}: missing field {name!r}")
            obj["__line__"] = lineno
            rows.append(obj)
    if not rows:
        raise DataError(f"{p}: no records (empty file)")
    return rows


def hub_rows(dataset: str, config: str | None, split: str) -> Iterator[dict[str, Any]] | None:
    """Rows from the Hugging Face hub via ``datasets``, or None when it is not importable/offline."""
    try:
        import datasets
    except ImportError:
        return None
    try:
        ds = datasets.load_dataset(dataset, config, split=split)
    except Exception as e:  # noqa: BLE001 (offline, unknown split, ...: fall through to the DataError)
        log.info("could not load %s from the Hugging Face hub: %s", dataset, e)
        return None
    return iter(ds)


def load_rows(
    relpath: str,
    *,
    data_dir: str | os.PathLike[str] | None,
    path: str | os.PathLike[str] | None,
    required: Sequence[str],
    hub: Callable[[], Iterator[dict[str, Any]] | None] | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """``(source, rows)`` for a task's data file, trying every location in priority order.

    Raises:
        DataError: one line saying where it looked and how to set $THINKTWICE_DATA.
    """
    if path is not None:
        return str(path), read_jsonl(path, required)
    found = find_file(relpath, data_dir)
    if found is not None:
        return str(found), read_jsonl(found, required)
    if data_dir is None and hub is not None:
        it = hub()
        if it is not None:
            rows = [dict(r, __line__=i + 1) for i, r in enumerate(it)]
            if rows:
                return "hub", rows
    looked = ", ".join(str(d / relpath) for d in candidate_dirs(data_dir))
    raise DataError(
        f"Data file {relpath!r} not found (looked in: {looked}; Hugging Face hub unavailable). "
        f"Set {ENV_VAR} to the folder that holds {relpath.split('/')[0]}/, or pass data_dir=/path."
    )
