"""Append-only schema migrations of the run store. Never edit a migration once released; add one."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

__all__ = ["MIGRATIONS", "apply"]

Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[tuple[str, Migration]] = []


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append((fn.__name__, fn))
    return fn


@migration
def m001_initial(db: sqlite3.Connection) -> None:
    db.executescript(
        """
        CREATE TABLE IF NOT EXISTS runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            name TEXT,
            created REAL NOT NULL,
            finished REAL,
            status TEXT NOT NULL,
            config TEXT NOT NULL,
            task TEXT,
            task_version TEXT,
            backend TEXT,
            model TEXT,
            strategy TEXT,
            seed INTEGER,
            version TEXT,
            git_sha TEXT,
            owner TEXT
        );
        CREATE TABLE IF NOT EXISTS problems (
            run_id INTEGER NOT NULL,
            problem_id TEXT NOT NULL,
            idx INTEGER NOT NULL,
            question TEXT NOT NULL,
            gold TEXT,
            meta TEXT NOT NULL,
            PRIMARY KEY (run_id, problem_id)
        );
        CREATE TABLE IF NOT EXISTS samples (
            run_id INTEGER NOT NULL,
            problem_id TEXT NOT NULL,
            idx INTEGER NOT NULL,
            stage TEXT NOT NULL,
            text TEXT NOT NULL,
            answer TEXT,
            correct INTEGER,
            finish_reason TEXT,
            usage TEXT NOT NULL,
            tokens BLOB,
            model TEXT,
            seed INTEGER,
            endpoint TEXT,
            PRIMARY KEY (run_id, problem_id, idx)
        );
        CREATE TABLE IF NOT EXISTS decisions (
            run_id INTEGER NOT NULL,
            problem_id TEXT NOT NULL,
            answer TEXT,
            correct INTEGER,
            confidence REAL,
            chosen INTEGER,
            usage TEXT NOT NULL,
            stages TEXT NOT NULL,
            votes TEXT NOT NULL,
            trace TEXT NOT NULL,
            stopped_because TEXT,
            strategy TEXT,
            text TEXT,
            PRIMARY KEY (run_id, problem_id)
        );
        CREATE TABLE IF NOT EXISTS scores (
            run_id INTEGER NOT NULL,
            problem_id TEXT NOT NULL,
            idx INTEGER NOT NULL,
            signal TEXT NOT NULL,
            value REAL,
            PRIMARY KEY (run_id, problem_id, idx, signal)
        );
        CREATE TABLE IF NOT EXISTS events (
            run_id INTEGER NOT NULL,
            problem_id TEXT,
            kind TEXT NOT NULL,
            message TEXT NOT NULL,
            created REAL NOT NULL
        );
        """
    )


@migration
def m002_call_log_and_event_detail(db: sqlite3.Connection) -> None:
    """``calls``: every model call's samples as they arrive (kept until the problem's decision is stored, so a
    killed run resumes without paying for them again); ``events.detail``: a failure's traceback."""
    db.executescript(
        """
        CREATE TABLE IF NOT EXISTS calls (
            run_id INTEGER NOT NULL,
            problem_id TEXT NOT NULL,
            key TEXT NOT NULL,
            seq INTEGER NOT NULL,
            samples BLOB NOT NULL,
            created REAL NOT NULL,
            PRIMARY KEY (run_id, problem_id, key, seq)
        );
        ALTER TABLE events ADD COLUMN detail TEXT;
        """
    )


def apply(db: sqlite3.Connection) -> list[str]:
    """Apply pending migrations in order; returns the names applied."""
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied REAL NOT NULL)")
    done = {r[0] for r in db.execute("SELECT name FROM _migrations")}
    applied = []
    import time

    for name, fn in MIGRATIONS:
        if name in done:
            continue
        with db:
            fn(db)
            db.execute("INSERT INTO _migrations(name, applied) VALUES (?, ?)", (name, time.time()))
        applied.append(name)
    return applied
