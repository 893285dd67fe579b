"""Integration: a real eval through the openai backend against a fake server that injects faults
into 20% of requests. The eval completes and every fault is either retried or recorded."""

from thinktwice.eval.runner import evaluate
from thinktwice.eval.store import RunStore
from thinktwice.lm.openai import OpenAIBackend
from thinktwice.registry import tasks
from thinktwice.strategies.self_consistency import SelfConsistency
from thinktwice.testing.fake_openai import FakeOpenAIServer


async def test_eval_survives_injected_faults(tmp_path):
    task = tasks.create("gsm8k")
    problems = task.load("test", limit=20)
    with FakeOpenAIServer(answers={"18": 0.5, "3": 0.5}, fault_rate=0.2,
                          faults=("429", "500", "timeout", "truncate"), hang_s=5.0, seed=1) as srv:
        # the fake server hangs without generating: resending a timed-out request is safe here (timeout_retries)
        backend = OpenAIBackend(srv.url, model="fake", timeout_s=0.5, max_retries=4, timeout_retries=4,
                                backoff_base_s=0.01, backoff_max_s=0.05, max_concurrency=8, seed=0)
        with RunStore(tmp_path / "r.db") as st:
            rid = st.create_run(kind="eval", config={})
            st.put_problems(rid, problems)
            try:
                res = await evaluate(task, SelfConsistency(n=3, batch=1), backend, problems, store=st,
                                     run_id=rid, concurrency=8)
            finally:
                await backend.aclose()
            decided = st.done_problems(rid)
            failed = {p for p, kind, _ in st.events(rid) if kind == "problem-failed"}
        stats = backend.stats
        faults = srv.stats.total_faults
    # every problem is accounted for: decided or recorded as failed, never both, never neither
    assert decided | failed == {p.id for p in problems} and not (decided & failed)
    assert len(res.rows) == 20 and res.n + res.failed == 20
    assert faults > 0 and sum(stats["retries"].values()) >= faults - stats["failures"]
    # with 4 retries a call fails only when 5 attempts in a row fault: rare
    assert res.failed <= 2
    assert res.usage.calls >= 3 * res.n and res.usage.completion_tokens > 0
