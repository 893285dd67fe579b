"""Robustness of `thinktwice sample`: SIGKILL then --resume, a second writer, corrupt or foreign stores."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

N_PROBLEMS, N_SAMPLES = 6, 8


def _data(tmp_path: Path) -> Path:
    path = tmp_path / "mini.jsonl"
    rows = [{"question": f"What is {i} + {i}?", "answer": f"#### {2 * i}"} for i in range(N_PROBLEMS)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["THINKTWICE_HOME"] = str(tmp_path)
    env.pop("OPENAI_BASE_URL", None)
    return env


def _sample_cmd(data: Path, db: Path, latency: float) -> list[str]:
    return [sys.executable, "-m", "thinktwice.cli", "sample", "--task", "gsm8k", "-T", f"path={data}",
            "-n", str(N_SAMPLES), "--batch", "2", "--concurrency", "2", "--store", str(db), "--backend", "scripted",
            "-B", 'replies=["So the answer is 4.", "The answer is 2."]', "-B", "cycle=true", "-B", f"latency={latency}"]


def _count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return int(con.execute("SELECT COUNT(*) FROM samples").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _wait(pred, timeout: float = 60.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def _assert_complete(db: Path, run: int) -> None:
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT problem_id, idx, COUNT(*) FROM samples WHERE run_id=? GROUP BY problem_id, idx",
                           (run,)).fetchall()
    finally:
        con.close()
    assert all(c == 1 for _, _, c in rows), "a sample is stored twice"
    keys = {(p, i) for p, i, _ in rows}
    assert keys == {(f"gsm8k-test-{p}", i) for p in range(N_PROBLEMS) for i in range(N_SAMPLES)}


def test_sigkill_mid_run_then_resume_stores_every_sample_once(tmp_path: Path) -> None:
    data, db = _data(tmp_path), tmp_path / "runs.db"
    proc = subprocess.Popen(_sample_cmd(data, db, 0.3), env=_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert _wait(lambda: _count(db) >= 2 or proc.poll() is not None), "the run never stored a sample"
        if proc.poll() is not None:
            pytest.skip("the run finished before it could be killed (machine too fast or too slow)")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    partial = _count(db)
    assert 0 < partial < N_PROBLEMS * N_SAMPLES
    res = subprocess.run(_sample_cmd(data, db, 0.0)[:4] + ["--resume", "1", "--store", str(db)],
                         env=_env(tmp_path), capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert "6/6 problems complete" in res.stdout
    _assert_complete(db, 1)
    con = sqlite3.connect(db)
    assert con.execute("SELECT status FROM runs WHERE id=1").fetchone()[0] == "done"
    con.close()


def test_second_writer_is_refused_and_concurrent_runs_are_safe(tmp_path: Path) -> None:
    data, db = _data(tmp_path), tmp_path / "runs.db"
    first = subprocess.Popen(_sample_cmd(data, db, 0.4), env=_env(tmp_path), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    try:
        assert _wait(lambda: _count(db) >= 1 or first.poll() is not None)
        if first.poll() is not None:
            pytest.skip("the first writer finished too early")
        res = subprocess.run(_sample_cmd(data, db, 0.0)[:4] + ["--resume", "1", "--store", str(db)],
                             env=_env(tmp_path), capture_output=True, text=True, timeout=120, check=False)
        assert res.returncode == 2
        assert "being written by another process" in res.stderr and "Traceback" not in res.stderr
        # a second process drawing its own run in the same store is serialised safely
        other = subprocess.run(_sample_cmd(data, db, 0.0), env=_env(tmp_path), capture_output=True, text=True,
                               timeout=120, check=False)
        assert other.returncode == 0, other.stderr
        assert first.wait(timeout=120) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    _assert_complete(db, 1)
    _assert_complete(db, 2)


@pytest.mark.parametrize("kind", ["random-bytes", "foreign-sqlite"])
@pytest.mark.parametrize("command", ["sample", "curve", "report"])
def test_corrupt_or_foreign_store_gives_one_line_error(tmp_path: Path, kind: str, command: str) -> None:
    db = tmp_path / "bad.db"
    if kind == "random-bytes":
        db.write_bytes(os.urandom(8192))
    else:
        con = sqlite3.connect(db)
        con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        con.commit()
        con.close()
    args = {"sample": _sample_cmd(_data(tmp_path), db, 0.0)[3:],
            "curve": ["curve", "--run", "1", "--store", str(db)],
            "report": ["report", "1", "--store", str(db), "--out", str(tmp_path / "rep")]}[command]
    res = subprocess.run([sys.executable, "-m", "thinktwice.cli", *args], env=_env(tmp_path), capture_output=True,
                         text=True, timeout=120, check=False)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and str(db) in last
    assert ("not a readable SQLite run store" in last) if kind == "random-bytes" else ("not a thinktwice run store" in last)
