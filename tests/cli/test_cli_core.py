"""The core commands end to end (scripted backend), bad input, and SIGKILL + --resume."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from thinktwice.eval.store import RunStore
from thinktwice.testing.cli import run_cli

SCRIPT = ['-B', 'replies=["The answer is 18.", "#### 3", "so 18"]', "-B", "cycle=true"]


def test_eval_json_summary_and_store(tmp_path, capsys):
    db = tmp_path / "r.db"
    code, out, _ = run_cli(["eval", "--task", "gsm8k", "--limit", "3", "--strategy", "self-consistency", "-n", "4",
                            "--backend", "scripted", *SCRIPT, "--store", str(db), "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    # gsm8k test golds: 18, 3, 70000 -> the cycle of replies gets the first two right
    assert data["n"] == 3 and data["accuracy"] == pytest.approx(2 / 3)
    assert data["usage"]["calls"] == 3 and data["usage"]["completion_tokens"] > 0
    with RunStore(db) as st:
        (info,) = st.list_runs()
        assert info.status == "done" and info.config["strategy_options"] == {"n": 4}
        assert sum(st.sample_counts(info.id).values()) == 12
    code, out, _ = run_cli(["show", str(info.id), "--store", str(db), "--json"], capsys)
    assert code == 0 and json.loads(out)["decided"] == 3
    code, out, _ = run_cli(["runs", "--store", str(db)], capsys)
    assert code == 0 and "gsm8k" in out


def test_solve_prints_answer_votes_and_compute(capsys):
    code, out, _ = run_cli(["solve", "What is 9+9?", "--strategy", "self-consistency", "-n", "3",
                            "--backend", "scripted", *SCRIPT], capsys)
    assert code == 0
    assert "answer: 18" in out and "3 calls" not in out and "generated tokens" in out


@pytest.mark.parametrize(
    "args, expected",
    [
        (["eval", "--task", "gsm9k"], "Did you mean 'gsm8k'"),
        (["eval", "--strategy", "self-consistancy"], "Did you mean 'self-consistency'"),
        (["eval", "--backend", "openai"], "needs --base-url"),
        (["eval", "--backend", "warp-drive"], "Unknown backend 'warp-drive'"),
        (["eval", "--strategy", "greedy", "-n", "3", "--backend", "scripted"], "no option"),
        (["show", "7"], "no run 7"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, expected, capsys, tmp_path):
    db = tmp_path / "r.db"
    RunStore(db).close()
    code, out, err = run_cli(args + ["--store", str(db)], capsys)
    assert code == 2
    assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_malformed_jsonl_names_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1+1", "answer": "2"}\n{"question": oops}\n')
    code, _, err = run_cli(["eval", "--task", "jsonl", "-T", f"path={bad}", "--backend", "scripted", *SCRIPT,
                            "--store", str(tmp_path / "r.db")], capsys)
    assert code == 2 and "bad.jsonl:2" in err and "Traceback" not in err


def test_sigkill_then_resume_completes_without_duplicates(tmp_path):
    db = tmp_path / "r.db"
    cmd = [sys.executable, "-m", "thinktwice.cli", "eval", "--task", "gsm8k", "--limit", "12",
           "--strategy", "self-consistency", "-n", "3", "--backend", "scripted", *SCRIPT, "-B", "latency=0.15",
           "--concurrency", "2", "--store", str(db)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 30
    while time.time() < deadline:  # wait until some but not all problems are stored
        time.sleep(0.1)
        if db.exists():
            try:
                with RunStore(db, readonly=True) as st:
                    runs = st.list_runs()
                    if runs and 2 <= len(st.done_problems(runs[0].id)) < 12:
                        break
            except Exception:
                continue
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with RunStore(db, readonly=True) as st:
        rid = st.list_runs()[0].id
        partial = len(st.done_problems(rid))
    assert 0 < partial < 12
    done = subprocess.run([sys.executable, "-m", "thinktwice.cli", "eval", "--resume", str(rid), "--store", str(db)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    with RunStore(db, readonly=True) as st:
        assert len(st.done_problems(rid)) == 12 and len(st.decisions(rid)) == 12
        counts = st.sample_counts(rid)
        assert len(counts) == 12 and set(counts.values()) == {3}
        assert st.get_run(rid).status == "done"
