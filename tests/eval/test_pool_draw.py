"""Drawing a sample pool: counts, stored statistics, progress, resume after a failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from thinktwice.errors import BackendUnavailable, ConfigError
from thinktwice.eval.pool import PoolConfig, PoolProgress, create_pool_run, draw_pool, sample_seed
from thinktwice.eval.pool_data import PoolData
from thinktwice.eval.store import RunStore
from thinktwice.lm.scripted import Reply, ScriptedBackend
from thinktwice.tasks.gsm8k import Gsm8kTask


def _task(tmp_path: Path, n: int = 3) -> Gsm8kTask:
    path = tmp_path / "mini.jsonl"
    rows = [{"question": f"What is {i} + {i}?", "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"} for i in range(1, n + 1)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return Gsm8kTask(path=path)


def _handler(prompt, params, index):  # type: ignore[no-untyped-def]
    # answer 2*i most of the time; the seed picks a wrong answer sometimes (deterministic)
    q = prompt.text()
    i = int(q.split("What is ")[1].split(" +")[0])
    wrong = (params.seed or 0) % 3 == 0
    return Reply(f"Let me add. The answer is {2 * i + (1 if wrong else 0)}.", confidence=0.6 if wrong else 0.95)


async def test_draw_pool_stores_every_sample_once_with_tokens(tmp_path: Path) -> None:
    task = _task(tmp_path)
    backend = ScriptedBackend(handler=_handler)
    problems = list(task.load())
    cfg = PoolConfig(n=6, batch=4, concurrency=2, top_logprobs=5)
    seen: list[PoolProgress] = []
    with RunStore(tmp_path / "s.db") as store:
        run = create_pool_run(store, task, backend, problems, cfg)
        res = await draw_pool(task, backend, problems, store, run, cfg, on_progress=seen.append)
        assert res.samples == 18 and not res.failed
        assert store.sample_counts(run) == {p.id: 6 for p in problems}
        rows = store.samples(run)
        assert sorted((r.problem_id, r.index) for r in rows) == sorted((p.id, i) for p in problems for i in range(6))
        assert all(r.sample.tokens and r.answer is not None for r in rows)
        assert all(r.correct == (int(r.answer) == 2 * (1 + [p.id for p in problems].index(r.problem_id)))
                   for r in rows)
        # one call per round of 4 on a native-n backend: the first sample carries the prompt tokens
        firsts = [r for r in rows if r.index in (0, 4)]
        assert all(r.sample.usage.calls == 1 and r.sample.usage.prompt_tokens > 0 for r in firsts)
        info = store.get_run(run)
        assert info.kind == "pool" and info.config["pool"]["n"] == 6
        assert info.config["prompt_version"] == task.prompt_version
        pool = PoolData.from_store(store, run)
        assert pool.shape == (3, 6) and {"self-certainty", "deepconf-lowest", "path-prob"} <= set(pool.scores)
    assert seen and seen[-1].samples == 18 and seen[-1].problems_done == 3
    assert seen[-1].tokens_per_second > 0 and seen[-1].eta_seconds == 0


async def test_failed_problem_is_recorded_and_resume_completes_it(tmp_path: Path) -> None:
    task = _task(tmp_path, n=2)
    problems = list(task.load())
    calls = {"n": 0}

    def flaky(prompt, params, index):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if "2 + 2" in prompt.text() and calls["n"] > 3 and index == 0:
            return Reply("", error=BackendUnavailable("server went away", backend="scripted"))
        return _handler(prompt, params, index)

    cfg = PoolConfig(n=4, batch=2, concurrency=1)
    with RunStore(tmp_path / "s.db") as store:
        run = create_pool_run(store, task, ScriptedBackend(handler=flaky), problems, cfg)
        res = await draw_pool(task, ScriptedBackend(handler=flaky), problems, store, run, cfg)
        assert res.failed == (problems[1].id,)
        counts = store.sample_counts(run)
        assert counts[problems[0].id] == 4 and counts.get(problems[1].id, 0) < 4
        assert any(kind == "problem-failed" for _, kind, _ in store.events(run))
        before = {(r.problem_id, r.index): r.sample.text for r in store.samples(run)}
        res2 = await draw_pool(task, ScriptedBackend(handler=_handler), problems, store, run, cfg)
        assert not res2.failed and res2.samples == 4 - counts.get(problems[1].id, 0)
        rows = store.samples(run)
        assert sorted((r.problem_id, r.index) for r in rows) == sorted((p.id, i) for p in problems for i in range(4))
        assert all(before[(r.problem_id, r.index)] == r.sample.text for r in rows if (r.problem_id, r.index) in before)


def test_pool_config_and_seeds() -> None:
    with pytest.raises(ConfigError, match="temperature > 0"):
        PoolConfig(temperature=0)
    with pytest.raises(ConfigError):
        PoolConfig(n=0)
    assert sample_seed(0, "a", 3) == sample_seed(0, "a", 3) != sample_seed(0, "a", 4)
