"""The CLI finishes its table whatever one problem does: hostile answers, bugs, failed problems."""

import json

from thinktwice.eval.store import RunStore
from thinktwice.tasks.gsm8k import Gsm8kTask as GSM8K
from thinktwice.testing.cli import run_cli

HUGE = "9" * 400


def test_a_400_digit_answer_is_graded_wrong_and_the_table_printed(tmp_path, capsys):
    replies = json.dumps(["The answer is 18.", f"The answer is {HUGE}.", "#### 70,000"])
    code, out, err = run_cli(["eval", "--task", "gsm8k", "--limit", "3", "-c", "1", "--backend", "scripted",
                              "-B", f"replies={replies}", "--store", str(tmp_path / "r.db"), "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["n"] == 3 and data["failed"] == 0
    assert [r["correct"] for r in data["rows"]] == [True, False, True]
    assert data["rows"][1]["answer"] == HUGE


def test_a_bug_in_one_problem_fails_it_alone_exit_1_and_resume_retries_it(tmp_path, capsys, monkeypatch):
    db = tmp_path / "r.db"
    real_grade = GSM8K.grade

    def buggy(self, answer, problem):
        if problem.gold == "3":
            raise KeyError("a bug")
        return real_grade(self, answer, problem)

    monkeypatch.setattr(GSM8K, "grade", buggy)
    script = ["-B", 'replies=["The answer is 18.", "#### 3", "#### 70000"]', "-B", "cycle=true"]
    code, out, err = run_cli(["eval", "--task", "gsm8k", "--limit", "3", "-c", "1", "--backend", "scripted", *script,
                              "--store", str(db)], capsys)
    assert code == 1
    assert "accuracy" in out and "1 problem(s) failed" in err and "completed-with-failures" in err
    with RunStore(db) as st:
        (info,) = st.list_runs()
        assert info.status == "completed-with-failures"
        assert len(st.done_problems(info.id)) == 2
        (ev,) = st.event_records(info.id)
        assert "KeyError" in ev.message and "Traceback" in ev.detail
    code, out, _ = run_cli(["show", str(info.id), "--store", str(db), "--tracebacks"], capsys)
    assert code == 0 and "problem-failed" in out and "Traceback" in out
    monkeypatch.setattr(GSM8K, "grade", real_grade)
    code, out, err = run_cli(["eval", "--resume", str(info.id), "--store", str(db), "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["n"] == 3 and data["failed"] == 0
    with RunStore(db) as st:
        assert st.get_run(info.id).status == "done"
        # the two finished problems kept their decisions: only the failed one was drawn again
        assert sum(d.usage.calls for d in st.decisions(info.id)) == 3


def test_sample_exits_1_when_a_problem_fails(tmp_path, capsys, monkeypatch):
    db = tmp_path / "p.db"
    real_extract = GSM8K.extract

    def buggy(self, text):
        if "boom" in text:
            raise ValueError("extractor bug")
        return real_extract(self, text)

    monkeypatch.setattr(GSM8K, "extract", buggy)
    code, out, err = run_cli(["sample", "--task", "gsm8k", "--limit", "2", "-n", "2", "-c", "1", "--backend",
                              "scripted", "-B", 'replies=["#### 18", "#### 18", "boom", "boom"]',
                              "--store", str(db)], capsys)
    assert code == 1 and "1/2 problems complete" in out
    with RunStore(db) as st:
        (info,) = st.list_runs()
        assert info.status == "completed-with-failures"


def test_the_ci_check_of_the_main_job_reads_the_printed_table(tmp_path, capsys, monkeypatch):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("check_main_job",
                                                  Path(__file__).parents[2] / "scripts" / "check_main_job.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    script = ["-B", 'replies=["The answer is 18.", "#### 3", "so 18"]', "-B", "cycle=true"]
    code, out, _ = run_cli(["eval", "--task", "gsm8k", "--limit", "3", "-n", "2", "--backend", "scripted", *script,
                            "--store", str(tmp_path / "a.db")], capsys)
    assert code == 0 and mod.check(out, problems=3) == []
    assert mod.check(out, problems=20) == ["expected 20 problem rows, found 3", "summary says n=3, failed=0"]
    real_grade = GSM8K.grade
    monkeypatch.setattr(GSM8K, "grade", lambda self, a, p: 1 / 0 if p.gold == "3" else real_grade(self, a, p))
    code, out, _ = run_cli(["eval", "--task", "gsm8k", "--limit", "3", "-n", "2", "--backend", "scripted", *script,
                            "--store", str(tmp_path / "b.db")], capsys)
    assert code == 1 and mod.check(out, problems=3) == ["summary says n=2, failed=1"]
