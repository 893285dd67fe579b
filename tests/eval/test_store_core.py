import sqlite3

import pytest

from thinktwice.errors import StoreError
from thinktwice.eval.store import RunStore
from thinktwice.types import Candidate, Decision, Problem, Sample, TokenStat, TraceStep, Usage


def sample(text, n_tok=2):
    toks = tuple(TokenStat(f"t{i}", -0.1 * i, (("a", -0.1), ("b", -2.0)), 0.5, 3.0) for i in range(n_tok))
    return Sample(text, toks, "stop", Usage(1, 5, 0, n_tok), "m", 1)


def test_run_lifecycle_and_metadata(tmp_path):
    with RunStore(tmp_path / "r.db") as st:
        rid = st.create_run(kind="eval", config={"a": 1}, task="gsm8k", task_version="v1", strategy="sc", seed=3)
        info = st.get_run(rid)
        assert info.config == {"a": 1} and info.status == "running" and info.version
        st.set_status(rid, "done")
        assert st.get_run(rid).status == "done" and st.get_run(rid).finished is not None
        assert [r.id for r in st.list_runs()] == [rid]
        with pytest.raises(StoreError, match="no run 99"):
            st.get_run(99)


def test_samples_are_idempotent_and_keep_token_stats(tmp_path):
    with RunStore(tmp_path / "r.db") as st:
        rid = st.create_run(kind="pool", config={})
        st.put_problems(rid, [Problem("p1", "q1", "4"), Problem("p0", "q0", "2")])
        st.put_samples(rid, "p1", [sample("x"), sample("y", 3)], answers=["4", None], correct=[True, False])
        st.put_samples(rid, "p1", [sample("y", 3)], answers=[None], correct=[False], start=1)  # rewrite
        st.put_samples(rid, "p0", [sample("z")], answers=["2"], correct=[True])
        got = st.samples(rid)
        assert [(s.problem_id, s.index) for s in got] == [("p1", 0), ("p1", 1), ("p0", 0)]  # problem order
        assert got[1].sample.tokens == sample("y", 3).tokens and got[1].correct is False
        assert st.samples(rid, with_tokens=False)[0].sample.tokens is None
        assert st.sample_counts(rid) == {"p1": 2, "p0": 1}
        assert [p.id for p in st.problems(rid)] == ["p1", "p0"]


def test_decision_with_candidates_and_scores(tmp_path):
    cands = (Candidate(sample("a"), "4", {"self-certainty": 2.5}), Candidate(sample("b"), "5"))
    d = Decision("4", 0.5, cands, 0, Usage(2, 10, 0, 4), {"sample": Usage(2, 10, 0, 4)},
                 (TraceStep("vote", {"tallies": {"4": 1}}),), "done", "sc", {"4": 1.0, "5": 1.0})
    with RunStore(tmp_path / "r.db") as st:
        rid = st.create_run(kind="eval", config={})
        st.put_decision(rid, "p", d, True, candidate_correct=[True, False])
        st.put_decision(rid, "p", d, True, candidate_correct=[True, False])  # idempotent
        (sd,) = st.decisions(rid)
        assert sd.answer == "4" and sd.correct is True and sd.usage == d.usage and sd.votes == {"4": 1.0, "5": 1.0}
        assert sd.trace == [{"kind": "vote", "tallies": {"4": 1}}] and sd.stages["sample"].calls == 2
        assert len(st.samples(rid, "p")) == 2 and st.done_problems(rid) == {"p"}
        assert st.scores(rid) == {("p", 0): {"self-certainty": 2.5}}


def test_corrupt_and_foreign_files_give_clear_errors(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match="not a readable SQLite"):
        RunStore(bad)
    foreign = tmp_path / "foreign.db"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE customers (id INTEGER)")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="not a thinktwice run store"):
        RunStore(foreign)


def test_claim_refuses_a_live_other_owner(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    with RunStore(tmp_path / "r.db") as st:
        rid = st.create_run(kind="eval", config={})
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            st.db.execute("UPDATE runs SET owner=? WHERE id=?", (f"{socket.gethostname()}:{proc.pid}", rid))
            with pytest.raises(StoreError, match="another process"):
                st.claim_run(rid)
        finally:
            proc.kill()
            proc.wait()
        st.claim_run(rid)  # the owner is dead now: the claim succeeds
        assert st.get_run(rid).owner.endswith(f":{os.getpid()}")
