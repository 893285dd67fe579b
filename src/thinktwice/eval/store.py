"""RunStore: one SQLite file (WAL) holding runs, problems, samples, decisions, scores and events.

Writes are idempotent on their keys ((run, problem, index) for samples, (run, problem) for
decisions), so a killed run resumes with nothing lost or duplicated. A run being written is
claimed by its process; a second process resuming the same run while the first is alive is
refused. Token statistics are stored as zlib-compressed JSON. Every SQLite failure (a damaged file,
a locked one, a foreign one) is a StoreError naming the file, never a bare sqlite3 error.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import sqlite3
import subprocess
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from thinktwice.errors import StoreError
from thinktwice.eval import migrations
from thinktwice.types import Decision, Problem, Sample, TokenStat, Usage

__all__ = ["Event", "RunStore", "RunInfo", "StoredSample", "StoredDecision", "git_sha"]

DONE, WITH_FAILURES, FAILED = "done", "completed-with-failures", "failed"
FINAL_STATUSES = (DONE, WITH_FAILURES, FAILED)
"""A run ends ``done`` (every problem finished), ``completed-with-failures`` (some problems failed and are
recorded in its events; ``--resume`` retries them) or ``failed`` (the run itself stopped)."""

_EXPECTED_TABLES = {"runs", "problems", "samples", "decisions", "scores", "events"}

P = ParamSpec("P")
R = TypeVar("R")
# what a damaged store raises: SQLite's own errors, and rows whose bytes no longer decode
_DAMAGE = (sqlite3.DatabaseError, zlib.error, json.JSONDecodeError, UnicodeDecodeError)
# what decoding a damaged row raises besides: a value of another type or shape than the schema's
_ROW_DAMAGE = _DAMAGE + (ValueError, TypeError, KeyError, IndexError, AttributeError)
_KINDS: dict[str, tuple[type, ...]] = {"s": (str,), "i": (int,), "f": (int, float), "b": (bytes,)}


def _store_error(path: Path, e: BaseException) -> StoreError:
    if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
        return StoreError(f"{path}: the store is locked by another writer ({e})")
    if isinstance(e, sqlite3.DatabaseError):
        return StoreError(f"{path}: not a readable SQLite run store ({e}); it may be damaged; "
                          "choose another --store path or restore a copy")
    return StoreError(f"{path}: the run store holds a damaged record ({type(e).__name__}: {e})")


def _guard(errors: tuple[type[BaseException], ...]) -> Callable[[Callable[Concatenate[RunStore, P], R]],
                                                                 Callable[Concatenate[RunStore, P], R]]:
    def deco(fn: Callable[Concatenate[RunStore, P], R]) -> Callable[Concatenate[RunStore, P], R]:
        @functools.wraps(fn)
        def wrapper(self: RunStore, *args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(self, *args, **kwargs)
            except StoreError:
                raise
            except errors as e:
                raise _store_error(self.path, e) from None

        return wrapper

    return deco


_guarded = _guard(_DAMAGE)
"""A writer: SQLite and decoding errors become a StoreError naming the file."""
_reading = _guard(_ROW_DAMAGE)
"""A reader (its arguments are ids): any error decoding a row also means the store is damaged."""


def _typed(row: Sequence[Any], spec: str) -> Sequence[Any]:
    """``row`` after checking each value against ``spec`` ("s i f b" = str int number bytes, "?" = or None)."""
    codes = spec.split()
    if len(row) != len(codes):
        raise ValueError(f"a row of {len(row)} columns, expected {len(codes)}")
    for i, (v, code) in enumerate(zip(row, codes)):
        if v is None and code.endswith("?"):
            continue
        if isinstance(v, bool) or not isinstance(v, _KINDS[code[0]]):
            raise TypeError(f"column {i} holds {type(v).__name__} {v!r:.40}")
    return row


def _json(text: Any, kind: type) -> Any:
    obj = json.loads(text)
    if not isinstance(obj, kind):
        raise TypeError(f"expected a JSON {kind.__name__}, found {type(obj).__name__}")
    return obj


@dataclass(frozen=True, slots=True)
class RunInfo:
    id: int
    kind: str
    name: str | None
    created: float
    finished: float | None
    status: str
    config: dict[str, Any]
    task: str | None
    task_version: str | None
    backend: str | None
    model: str | None
    strategy: str | None
    seed: int | None
    version: str | None
    git_sha: str | None
    owner: str | None


@dataclass(frozen=True, slots=True)
class StoredSample:
    problem_id: str
    index: int
    stage: str
    sample: Sample
    answer: str | None
    correct: bool | None


@dataclass(frozen=True, slots=True)
class Event:
    """Something that went wrong in a run: a failed problem, a retried call. ``detail`` is the traceback."""

    problem_id: str | None
    kind: str
    message: str
    created: float
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class StoredDecision:
    problem_id: str
    answer: str | None
    correct: bool | None
    confidence: float | None
    chosen: int | None
    usage: Usage
    stages: dict[str, Usage]
    votes: dict[str, float]
    trace: list[dict[str, Any]]
    stopped_because: str | None
    strategy: str | None
    text: str | None


def git_sha() -> str | None:
    """The git commit of the source tree the package runs from, when it is a checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and len(sha) == 40 else None


def _pack_tokens(tokens: Sequence[TokenStat] | None) -> bytes | None:
    if tokens is None:
        return None
    raw = json.dumps([t.to_list() for t in tokens], separators=(",", ":"))
    return zlib.compress(raw.encode(), 6)


def _unpack_tokens(blob: bytes | None) -> tuple[TokenStat, ...] | None:
    if blob is None:
        return None
    return tuple(TokenStat.from_list(v) for v in _json(zlib.decompress(blob), list))


def _bool(v: Any) -> bool | None:
    return None if v is None else bool(v)


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(owner: str | None) -> bool:
    if not owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another host: cannot check; treat a stale claim as released
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunStore:
    """The SQLite run store. Use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly and not self.path.exists():
            raise StoreError(f"{self.path}: no such run store")
        if readonly and self.path.is_file() and self.path.stat().st_size == 0:
            raise StoreError(f"{self.path}: the file is empty, not a thinktwice run store")
        if not readonly and self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            uri = f"file:{self.path}?mode=ro" if readonly else str(self.path)
            self.db = sqlite3.connect(uri, uri=readonly, timeout=30.0, isolation_level=None)
        except sqlite3.DatabaseError as e:
            raise _store_error(self.path, e) from None
        try:
            self._open(readonly)
        except BaseException:
            self.db.close()
            raise

    def _open(self, readonly: bool) -> None:
        try:
            self.db.execute("PRAGMA busy_timeout=30000")
            tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as e:
            raise _store_error(self.path, e) from None
        user_tables = {t for t in tables if not t.startswith("sqlite_")}
        if user_tables and "_migrations" not in user_tables:
            raise StoreError(
                f"{self.path}: this SQLite file is not a thinktwice run store (it has tables "
                f"{', '.join(sorted(user_tables)[:5])}); choose another --store path"
            )
        if readonly and not user_tables:
            raise StoreError(f"{self.path}: an empty SQLite file, not a thinktwice run store (it has no runs table)")
        if not readonly:
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                migrations.apply(self.db)
            except sqlite3.DatabaseError as e:
                raise StoreError(f"{self.path}: cannot initialise the run store ({e})") from None
        try:
            missing = _EXPECTED_TABLES - {
                r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            if not missing and readonly:
                self.db.execute("SELECT id FROM runs LIMIT 1").fetchall()  # a first read of the runs table
        except sqlite3.DatabaseError as e:
            raise _store_error(self.path, e) from None
        if missing:
            raise StoreError(f"{self.path}: run store is missing tables {sorted(missing)}")

    # -- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise StoreError(f"{self.path}: the store is locked by another writer ({e})") from None
        try:
            yield self.db
        except BaseException:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:  # SQLite may have rolled back itself (a damaged page): keep the first error
                pass
            raise
        else:
            self.db.execute("COMMIT")

    # -- runs ---------------------------------------------------------------------------------
    @_guarded
    def create_run(
        self,
        *,
        kind: str,
        config: Mapping[str, Any],
        task: str | None = None,
        task_version: str | None = None,
        backend: str | None = None,
        model: str | None = None,
        strategy: str | None = None,
        seed: int | None = None,
        name: str | None = None,
    ) -> int:
        """Create a run claimed by this process; records the package version and git sha."""
        from thinktwice import __version__

        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO runs(kind, name, created, status, config, task, task_version, backend, model,"
                " strategy, seed, version, git_sha, owner) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (kind, name, time.time(), "running", json.dumps(dict(config), default=str), task,
                 task_version, backend, model, strategy, seed, __version__, git_sha(), _owner()),
            )
            return int(cur.lastrowid or 0)

    def _row_to_run(self, r: sqlite3.Row | tuple[Any, ...]) -> RunInfo:
        r = _typed(r, "i s s? f f? s s s? s? s? s? s? i? s? s? s?")
        return RunInfo(r[0], r[1], r[2], r[3], r[4], r[5], _json(r[6], dict), r[7], r[8], r[9], r[10],
                       r[11], r[12], r[13], r[14], r[15])

    _RUN_COLS = ("id, kind, name, created, finished, status, config, task, task_version, backend, model,"
                 " strategy, seed, version, git_sha, owner")

    @_reading
    def get_run(self, run_id: int) -> RunInfo:
        r = self.db.execute(f"SELECT {self._RUN_COLS} FROM runs WHERE id=?", (run_id,)).fetchone()
        if r is None:
            ids = [str(x[0]) for x in self.db.execute("SELECT id FROM runs ORDER BY id DESC LIMIT 10")]
            hint = f" (recent runs: {', '.join(ids)})" if ids else " (the store has no runs)"
            raise StoreError(f"{self.path}: no run {run_id}{hint}")
        return self._row_to_run(r)

    @_reading
    def list_runs(self) -> list[RunInfo]:
        return [self._row_to_run(r) for r in self.db.execute(f"SELECT {self._RUN_COLS} FROM runs ORDER BY id")]

    @_guarded
    def set_status(self, run_id: int, status: str) -> None:
        finished = time.time() if status in FINAL_STATUSES else None
        with self._tx() as db:
            db.execute("UPDATE runs SET status=?, finished=?, owner=CASE WHEN ? IS NULL THEN owner ELSE NULL END"
                       " WHERE id=?", (status, finished, finished, run_id))

    @_guarded
    def update_config(self, run_id: int, changes: Mapping[str, Any]) -> None:
        """Merge ``changes`` into the stored config of ``run_id`` (facts learnt while the run ran)."""
        with self._tx() as db:
            row = db.execute("SELECT config FROM runs WHERE id=?", (run_id,)).fetchone()
            if row is None:
                raise StoreError(f"{self.path}: no run {run_id}")
            config = {**json.loads(row[0]), **dict(changes)}
            db.execute("UPDATE runs SET config=? WHERE id=?", (json.dumps(config, default=str), run_id))

    @_guarded
    def claim_run(self, run_id: int) -> None:
        """Take over writing ``run_id`` (for --resume); refuse while another live process holds it."""
        with self._tx() as db:
            row = db.execute("SELECT owner FROM runs WHERE id=?", (run_id,)).fetchone()
            if row is None:
                raise StoreError(f"{self.path}: no run {run_id}")
            if isinstance(row[0], str) and _alive(row[0]):  # a damaged owner is no live claim
                raise StoreError(
                    f"run {run_id} is being written by another process ({row[0]}); "
                    "wait for it to finish or stop it before resuming"
                )
            db.execute("UPDATE runs SET owner=?, status='running', finished=NULL WHERE id=?", (_owner(), run_id))

    # -- problems -----------------------------------------------------------------------------
    @_guarded
    def put_problems(self, run_id: int, problems: Sequence[Problem]) -> None:
        with self._tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO problems(run_id, problem_id, idx, question, gold, meta) VALUES (?,?,?,?,?,?)",
                [(run_id, p.id, i, p.question, p.gold, json.dumps(dict(p.meta), default=str))
                 for i, p in enumerate(problems)],
            )

    @_reading
    def problems(self, run_id: int) -> list[Problem]:
        rows = self.db.execute(
            "SELECT problem_id, question, gold, meta FROM problems WHERE run_id=? ORDER BY idx", (run_id,)
        )
        return [Problem(r[0], r[1], r[2], _json(r[3], dict)) for r in (_typed(r, "s s s? s") for r in rows)]

    # -- samples ------------------------------------------------------------------------------
    def _sample_rows(
        self, run_id: int, problem_id: str, samples: Sequence[Sample], answers: Sequence[str | None],
        correct: Sequence[bool | None], start: int, stages: Sequence[str],
    ) -> list[tuple[Any, ...]]:
        if not (len(samples) == len(answers) == len(correct) == len(stages)):
            raise ValueError("samples, answers, correct and stages must have the same length")
        return [
            (run_id, problem_id, start + i, st, s.text, a, None if c is None else int(c), s.finish_reason,
             json.dumps(s.usage.to_dict()), _pack_tokens(s.tokens), s.model, s.seed, s.endpoint)
            for i, (s, a, c, st) in enumerate(zip(samples, answers, correct, stages))
        ]

    _SAMPLE_INSERT = (
        "INSERT OR REPLACE INTO samples(run_id, problem_id, idx, stage, text, answer, correct, finish_reason,"
        " usage, tokens, model, seed, endpoint) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
    )

    @_guarded
    def put_samples(
        self,
        run_id: int,
        problem_id: str,
        samples: Sequence[Sample],
        *,
        answers: Sequence[str | None],
        correct: Sequence[bool | None],
        start: int = 0,
        stage: str = "sample",
    ) -> None:
        rows = self._sample_rows(run_id, problem_id, samples, answers, correct, start, [stage] * len(samples))
        with self._tx() as db:
            db.executemany(self._SAMPLE_INSERT, rows)

    @_reading
    def samples(self, run_id: int, problem_id: str | None = None, *, with_tokens: bool = True) -> list[StoredSample]:
        cols = "problem_id, idx, stage, text, answer, correct, finish_reason, usage, model, seed, endpoint"
        cols += ", tokens" if with_tokens else ", NULL"
        if problem_id is None:
            rows = self.db.execute(
                f"SELECT {cols} FROM samples s WHERE run_id=? ORDER BY "
                "(SELECT idx FROM problems p WHERE p.run_id=s.run_id AND p.problem_id=s.problem_id), problem_id, idx",
                (run_id,),
            )
        else:
            rows = self.db.execute(
                f"SELECT {cols} FROM samples WHERE run_id=? AND problem_id=? ORDER BY idx", (run_id, problem_id)
            )
        out = []
        for r in rows:
            r = _typed(r, "s i s s s? i? s? s s? i? s? b?")
            sample = Sample(
                text=r[3], tokens=_unpack_tokens(r[11]), finish_reason=r[6] or "stop",
                usage=Usage.from_dict(_json(r[7], dict)), model=r[8] or "", seed=r[9], endpoint=r[10],
            )
            out.append(StoredSample(r[0], r[1], r[2], sample, r[4], _bool(r[5])))
        return out

    @_reading
    def sample_counts(self, run_id: int) -> dict[str, int]:
        rows = self.db.execute("SELECT problem_id, COUNT(*) FROM samples WHERE run_id=? GROUP BY problem_id", (run_id,))
        return {r[0]: int(r[1]) for r in rows}

    # -- decisions ----------------------------------------------------------------------------
    @_guarded
    def put_decision(
        self,
        run_id: int,
        problem_id: str,
        decision: Decision,
        correct: bool | None,
        *,
        candidate_correct: Sequence[bool | None] | None = None,
    ) -> None:
        """Store a decision and its candidates (as samples) atomically."""
        cands = decision.candidates
        cc = list(candidate_correct) if candidate_correct is not None else [None] * len(cands)
        rows = self._sample_rows(
            run_id, problem_id, [c.sample for c in cands], [c.answer for c in cands], cc, 0,
            [c.stage for c in cands],
        )
        with self._tx() as db:
            db.execute("DELETE FROM samples WHERE run_id=? AND problem_id=?", (run_id, problem_id))
            db.execute("DELETE FROM calls WHERE run_id=? AND problem_id=?", (run_id, problem_id))
            db.executemany(self._SAMPLE_INSERT, rows)
            db.execute(
                "INSERT OR REPLACE INTO decisions(run_id, problem_id, answer, correct, confidence, chosen, usage,"
                " stages, votes, trace, stopped_because, strategy, text) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (run_id, problem_id, decision.answer, None if correct is None else int(correct),
                 decision.confidence, decision.chosen, json.dumps(decision.usage.to_dict()),
                 json.dumps({k: v.to_dict() for k, v in decision.stages.items()}),
                 json.dumps(dict(decision.votes)), json.dumps([t.to_dict() for t in decision.trace], default=str),
                 decision.stopped_because, decision.strategy, decision.text),
            )
            for i, c in enumerate(cands):
                for sig, val in c.scores.items():
                    db.execute("INSERT OR REPLACE INTO scores(run_id, problem_id, idx, signal, value) VALUES (?,?,?,?,?)",
                               (run_id, problem_id, i, sig, val))

    @_reading
    def decisions(self, run_id: int) -> list[StoredDecision]:
        rows = self.db.execute(
            "SELECT d.problem_id, answer, correct, confidence, chosen, usage, stages, votes, trace, stopped_because,"
            " strategy, text FROM decisions d LEFT JOIN problems p ON p.run_id=d.run_id AND p.problem_id=d.problem_id"
            " WHERE d.run_id=? ORDER BY p.idx, d.problem_id",
            (run_id,),
        )
        return [
            StoredDecision(
                r[0], r[1], _bool(r[2]), r[3], r[4], Usage.from_dict(_json(r[5], dict)),
                {k: Usage.from_dict(v) for k, v in _json(r[6], dict).items()}, _json(r[7], dict),
                _json(r[8], list), r[9], r[10], r[11],
            )
            for r in (_typed(r, "s s? i? f? i? s s s s s? s? s?") for r in rows)
        ]

    @_reading
    def done_problems(self, run_id: int) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT problem_id FROM decisions WHERE run_id=?", (run_id,))}

    # -- scores and events --------------------------------------------------------------------
    @_guarded
    def put_scores(self, run_id: int, problem_id: str, signal: str, scores: Mapping[int, float]) -> None:
        with self._tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO scores(run_id, problem_id, idx, signal, value) VALUES (?,?,?,?,?)",
                [(run_id, problem_id, int(i), signal, float(v)) for i, v in scores.items()],
            )

    @_reading
    def scores(self, run_id: int, signal: str | None = None) -> dict[tuple[str, int], dict[str, float]]:
        q = "SELECT problem_id, idx, signal, value FROM scores WHERE run_id=?"
        args: tuple[Any, ...] = (run_id,)
        if signal is not None:
            q += " AND signal=?"
            args = (run_id, signal)
        out: dict[tuple[str, int], dict[str, float]] = {}
        for pid, idx, sig, val in self.db.execute(q, args):
            out.setdefault((pid, int(idx)), {})[sig] = float("nan") if val is None else float(val)
        return out

    @_guarded
    def add_event(self, run_id: int, kind: str, message: str, problem_id: str | None = None, *,
                  detail: str | None = None) -> None:
        """Record something that went wrong (a failed problem, a retried call) so it is not lost;
        ``detail`` keeps the long form (a traceback)."""
        with self._tx() as db:
            db.execute("INSERT INTO events(run_id, problem_id, kind, message, created, detail) VALUES (?,?,?,?,?,?)",
                       (run_id, problem_id, kind, message, time.time(), detail))

    @_reading
    def events(self, run_id: int) -> list[tuple[str | None, str, str]]:
        """(problem, kind, one-line message) of every event, oldest first."""
        return [(e.problem_id, e.kind, e.message) for e in self.event_records(run_id)]

    @_reading
    def event_records(self, run_id: int) -> list[Event]:
        """Every event of ``run_id`` with its detail (traceback), oldest first."""
        has_detail = "detail" in {r[1] for r in self.db.execute("PRAGMA table_info(events)")}
        cols = "problem_id, kind, message, created" + (", detail" if has_detail else ", NULL")
        rows = self.db.execute(f"SELECT {cols} FROM events WHERE run_id=? ORDER BY rowid", (run_id,))
        return [Event(r[0], r[1], r[2], float(r[3]), r[4]) for r in (_typed(r, "s? s s f s?") for r in rows)]

    # -- the call log -------------------------------------------------------------------------
    @_guarded
    def put_call(self, run_id: int, problem_id: str, key: str, seq: int, samples: Sequence[Sample]) -> None:
        """Store one model call's samples as soon as they arrive (idempotent on (key, seq))."""
        blob = zlib.compress(json.dumps([s.to_dict() for s in samples], separators=(",", ":")).encode(), 6)
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO calls(run_id, problem_id, key, seq, samples, created) VALUES (?,?,?,?,?,?)",
                       (run_id, problem_id, key, seq, blob, time.time()))

    @_reading
    def calls(self, run_id: int, problem_id: str | None = None) -> dict[str, dict[str, list[list[Sample]]]]:
        """Logged calls not yet folded into a decision: problem -> call key -> the samples of each call, in
        ``seq`` order. Empty for a store written before the call log existed."""
        if not self._has_table("calls"):
            return {}
        q = "SELECT problem_id, key, samples FROM calls WHERE run_id=?"
        args: tuple[Any, ...] = (run_id,)
        if problem_id is not None:
            q += " AND problem_id=?"
            args = (run_id, problem_id)
        out: dict[str, dict[str, list[list[Sample]]]] = {}
        for pid, key, blob in self.db.execute(q + " ORDER BY problem_id, key, seq", args):
            samples = [Sample.from_dict(d) for d in _json(zlib.decompress(blob), list)]
            out.setdefault(pid, {}).setdefault(key, []).append(samples)
        return out

    def _has_table(self, name: str) -> bool:
        return self.db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None
