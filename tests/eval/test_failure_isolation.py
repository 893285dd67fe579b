"""One problem that raises anything never ends a run for the others; paid-for samples survive a failure."""

import zlib

import pytest

from thinktwice.errors import BackendUnavailable
from thinktwice.eval.pool import PoolConfig, create_pool_run, draw_pool
from thinktwice.eval.runner import evaluate
from thinktwice.eval.store import RunStore
from thinktwice.lm.scripted import Reply, ScriptedBackend
from thinktwice.strategies.adaptive import AdaptiveConsistency
from thinktwice.strategies.self_consistency import SelfConsistency


def doubling(prompt, params, i):
    a = int(prompt.messages[-1].content.split()[2].split("+")[0])
    return f"it is {2 * a}"


class BuggyGrader:
    """Wraps a task; grading problem ``bad`` raises a bug (not a BackendError)."""

    def __init__(self, task, bad):
        self.task, self.bad = task, bad

    def __getattr__(self, name):
        return getattr(self.task, name)

    def grade(self, answer, problem):
        if problem.id == self.bad:
            raise ZeroDivisionError("a bug in the grader")
        return self.task.grade(answer, problem)


async def test_an_unexpected_error_fails_one_problem_with_its_traceback(tiny_task, tmp_path):
    task = BuggyGrader(tiny_task, "2")
    with RunStore(tmp_path / "r.db") as st:
        rid = st.create_run(kind="eval", config={})
        res = await evaluate(task, SelfConsistency(n=2), ScriptedBackend(handler=doubling), tiny_task.load(),
                             store=st, run_id=rid, concurrency=2)
        assert res.failed == 1 and res.n == 5 and res.correct == 5
        (bad,) = [r for r in res.rows if r.error]
        assert bad.problem_id == "2" and bad.error.startswith("ZeroDivisionError: a bug in the grader")
        (ev,) = st.event_records(rid)
        assert ev.kind == "problem-failed" and ev.problem_id == "2"
        assert "Traceback" in ev.detail and "grade" in ev.detail
        assert st.done_problems(rid) == {"0", "1", "3", "4", "5"}


async def test_a_strategy_bug_in_every_problem_still_reports_instead_of_crashing(tiny_task):
    def handler(prompt, params, i):
        raise RuntimeError("boom")  # not even a Reply: a bug in the backend's own code

    with pytest.raises(Exception, match="every problem failed; first error: RuntimeError: boom"):
        await evaluate(tiny_task, SelfConsistency(n=1), ScriptedBackend(handler=handler), tiny_task.load())


async def test_samples_of_a_failed_problem_are_kept_and_reused_on_resume(tiny_task, tmp_path):
    """Adaptive-consistency draws single-sample calls; one call of problem 1 fails the first time. The
    resumed run serves every logged call from the store and pays only for the rest; its decision equals
    that of a run that never failed."""
    problems = tiny_task.load()[:2]
    strategy = AdaptiveConsistency(max_samples=8, batch=1, threshold=0.99)

    def handler(prompt, params, i):  # the reply depends only on the call's seed, as a seeded model's would
        if "1+1" not in prompt.messages[-1].content:
            return doubling(prompt, params, i)
        return "it is 9" if zlib.crc32(str(params.seed).encode()) % 3 == 0 else "it is 2"

    ref = await evaluate(tiny_task, strategy, ScriptedBackend(handler=handler), problems, seed=3)
    ref_row = next(r for r in ref.rows if r.problem_id == "1")
    assert ref_row.usage.calls >= 4
    seen = {"n": 0}

    def flaky(prompt, params, i):
        if "1+1" in prompt.messages[-1].content:
            seen["n"] += 1
            if seen["n"] == 4:
                return Reply(error=BackendUnavailable("connection reset"))
        return handler(prompt, params, i)

    backend = ScriptedBackend(handler=flaky)
    with RunStore(tmp_path / "r.db") as st:
        rid = st.create_run(kind="eval", config={})
        first = await evaluate(tiny_task, strategy, backend, problems, store=st, run_id=rid, seed=3)
        assert first.failed == 1
        logged = st.calls(rid)
        n_logged = sum(len(v) for v in logged["1"].values())
        assert set(logged) == {"1"} and 3 <= n_logged < ref_row.usage.calls
        before = len(backend.calls)
        second = await evaluate(tiny_task, strategy, backend, problems, store=st, run_id=rid, seed=3)
        new_calls = len(backend.calls) - before
        (d,) = [x for x in st.decisions(rid) if x.problem_id == "1"]
        assert st.calls(rid) == {}  # folded into the decision
    row = next(r for r in second.rows if r.problem_id == "1")
    assert second.failed == 0 and row.answer == ref_row.answer
    assert row.usage.calls == ref_row.usage.calls and row.usage.completion_tokens == ref_row.usage.completion_tokens
    assert new_calls == ref_row.usage.calls - n_logged  # the logged calls were not paid for again
    assert any(t.get("kind") == "resumed" and t["reused_calls"] == n_logged for t in d.trace)


async def test_pool_draw_survives_an_unexpected_error_in_one_problem(tiny_task, tmp_path):
    task = BuggyGrader(tiny_task, "4")
    backend = ScriptedBackend(handler=doubling)
    with RunStore(tmp_path / "p.db") as st:
        cfg = PoolConfig(n=3, batch=3, concurrency=2)
        rid = create_pool_run(st, tiny_task, backend, tiny_task.load(), cfg)
        res = await draw_pool(task, backend, tiny_task.load(), st, rid, cfg)
        assert res.failed == ("4",)
        counts = st.sample_counts(rid)
        assert all(counts[p] == 3 for p in ("0", "1", "2", "3", "5")) and "4" not in counts
        (ev,) = st.event_records(rid)
        assert ev.problem_id == "4" and "ZeroDivisionError" in ev.message and "Traceback" in ev.detail
        assert st.get_run(rid).config["native_n"] is True


async def test_a_pool_records_that_its_server_ignored_n(tiny_task, tmp_path):
    """The openai backend learns on its first call that a server ignores ``n``; the pool run must then say
    native_n False, or every replay would bill one call per round of separate requests."""
    import dataclasses

    class LearnsNoN(ScriptedBackend):
        async def sample(self, prompt, params, n=1, *, monitor=None):
            out = await super().sample(prompt, params, n, monitor=monitor)
            self.capabilities = dataclasses.replace(self.capabilities, native_n=False)
            return out

    backend = LearnsNoN(handler=doubling)
    with RunStore(tmp_path / "p.db") as st:
        cfg = PoolConfig(n=2, batch=2, concurrency=1)
        rid = create_pool_run(st, tiny_task, backend, tiny_task.load()[:2], cfg)
        assert st.get_run(rid).config["native_n"] is True
        await draw_pool(tiny_task, backend, tiny_task.load()[:2], st, rid, cfg)
        assert st.get_run(rid).config["native_n"] is False
