"""Sharded eval and pool on a local two-node Ray cluster: same rows as one process, a killed worker
is replaced without duplicating or losing anything, the CLI's --ray path."""

import asyncio
import os
import signal
import sqlite3

import pytest

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

from thinktwice.cli import main
from thinktwice.eval.distributed import RayConfig, build_backend, draw_pool_ray, evaluate_ray
from thinktwice.eval.pool import PoolConfig, draw_pool
from thinktwice.eval.runner import evaluate
from thinktwice.eval.store import RunStore
from thinktwice.registry import tasks
from thinktwice.strategies import create_strategy
from thinktwice.testing import FakeOpenAIServer

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

HANDLER = "thinktwice.testing.scripted_handlers:seeded_answer"
NODE = {"num_cpus": 1, "object_store_memory": 80 * 1024 * 1024}


@pytest.fixture(scope="module")
def cluster():
    """A head node and one extra worker node on 127.0.0.1, one CPU each."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_DISABLE_IMPORT_WARNING"] = "1"
    c = cluster_utils.Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
    try:
        c.add_node(**NODE)
        ray.init(address=c.address, logging_level="WARNING", log_to_driver=False)
        c.wait_for_nodes(timeout=60)
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def _spec(backend, **kw):
    spec = {"task": "gsm8k", "task_options": {}, "split": "test", "limit": 10, "strategy": "self-consistency",
            "strategy_options": {"n": 4}, "backend": backend, "backend_options": {}, "base_url": None,
            "model": None, "concurrency": 4, "seed": 7, "budget_tokens": None, "budget_calls": None}
    spec.update(kw)
    return spec


def _problems(spec):
    return list(tasks.create(spec["task"]).load(spec["split"], limit=spec["limit"]))


def _in_process(spec, db):
    task = tasks.create(spec["task"])
    problems = _problems(spec)
    strategy = create_strategy(spec["strategy"], **spec["strategy_options"])
    backend = build_backend(spec, None, spec["concurrency"])
    with RunStore(db) as st:
        rid = st.create_run(kind="eval", config=spec)
        st.put_problems(rid, problems)
        res = asyncio.run(evaluate(task, strategy, backend, problems, store=st, run_id=rid,
                                   concurrency=spec["concurrency"], seed=spec["seed"]))
    return rid, res


def _u(usage):
    """Usage without wall-clock seconds (timing differs between runs)."""
    return {k: v for k, v in usage.to_dict().items() if k != "seconds"}


def _rows(db, rid):
    with RunStore(db, readonly=True) as st:
        decisions = {d.problem_id: (d.answer, d.correct, _u(d.usage)) for d in st.decisions(rid)}
        samples = [(s.problem_id, s.index, s.sample.text, s.answer, s.sample.seed) for s in st.samples(rid)]
    return decisions, samples


def _exactly_once(db, rid, n_problems, n):
    con = sqlite3.connect(db)
    try:
        dec = con.execute("SELECT COUNT(*), COUNT(DISTINCT problem_id) FROM decisions WHERE run_id=?", (rid,)).fetchone()
        per = con.execute("SELECT problem_id, COUNT(*), MIN(idx), MAX(idx) FROM samples WHERE run_id=? "
                          "GROUP BY problem_id", (rid,)).fetchall()
    finally:
        con.close()
    assert dec == (n_problems, n_problems)
    assert len(per) == n_problems
    assert all(c == n and lo == 0 and hi == n - 1 for _, c, lo, hi in per)


def test_sharded_scripted_eval_equals_single_process(cluster, tmp_path):
    spec = _spec("scripted", backend_options={"handler": HANDLER})
    rid0, res0 = _in_process(spec, tmp_path / "local.db")
    problems = _problems(spec)
    pids = set()
    with RunStore(tmp_path / "ray.db") as st:
        rid = st.create_run(kind="eval", config=spec)
        st.put_problems(rid, problems)
        seen = []
        res = asyncio.run(evaluate_ray(spec, problems, store=st, run_id=rid, ray_config=RayConfig(shards=5),
                                       on_progress=seen.append, on_worker_pid=pids.add))
    assert [(r.problem_id, r.answer, r.correct, _u(r.usage)) for r in res.rows] == \
           [(r.problem_id, r.answer, r.correct, _u(r.usage)) for r in res0.rows]
    assert _rows(tmp_path / "ray.db", rid) == _rows(tmp_path / "local.db", rid0)
    assert len({a for a, _, _ in _rows(tmp_path / "ray.db", rid)[0].values()}) > 1  # answers really vary
    assert [p.done for p in seen] == list(range(1, len(problems) + 1))
    assert len(pids) == 2  # both nodes' actors took shards


def test_killed_worker_is_replaced_without_duplicates(cluster, tmp_path):
    with FakeOpenAIServer(latency_s=0.05, answers={"42": 0.5, "41": 0.3, "40": 0.2}) as srv:
        spec = _spec("openai", base_url=srv.url, limit=16, concurrency=2)
        rid0, res0 = _in_process(spec, tmp_path / "local.db")
        problems = _problems(spec)
        pids: list[int] = []
        killed: list[int] = []

        def on_progress(p):
            if p.done == 4 and not killed:  # mid-run: kill the worker that reported last
                killed.append(pids[-1])
                os.kill(pids[-1], signal.SIGKILL)

        with RunStore(tmp_path / "ray.db") as st:
            rid = st.create_run(kind="eval", config=spec)
            st.put_problems(rid, problems)
            res = asyncio.run(evaluate_ray(spec, problems, store=st, run_id=rid,
                                           ray_config=RayConfig(shards=4, max_retries=2),
                                           on_progress=on_progress, on_worker_pid=pids.append))
    assert killed and len(set(pids)) >= 3  # a replacement actor came up after the kill
    _exactly_once(tmp_path / "ray.db", rid, len(problems), 4)
    assert [(r.problem_id, r.answer, r.correct, _u(r.usage)) for r in res.rows] == \
           [(r.problem_id, r.answer, r.correct, _u(r.usage)) for r in res0.rows]
    dec, samples = _rows(tmp_path / "ray.db", rid)
    assert len(dec) == len(problems)
    _, samples0 = _rows(tmp_path / "local.db", rid0)
    assert samples == samples0
    with RunStore(tmp_path / "ray.db", readonly=True) as st:
        assert {s.sample.endpoint for s in st.samples(rid)} == {srv.url.rstrip("/")}


def test_sharded_pool_equals_single_process(cluster, tmp_path):
    spec = _spec("scripted", backend_options={"handler": HANDLER}, limit=6)
    problems = _problems(spec)
    config = PoolConfig(n=6, batch=4, concurrency=2, seed=3)
    task = tasks.create("gsm8k")
    out = {}
    for name in ("local", "ray"):
        with RunStore(tmp_path / f"{name}.db") as st:
            rid = st.create_run(kind="pool", config={})
            st.put_problems(rid, problems)
            if name == "local":
                asyncio.run(draw_pool(task, build_backend(spec, None, 2), problems, st, rid, config))
            else:
                res = asyncio.run(draw_pool_ray(spec, problems, st, rid, config, ray_config=RayConfig(shards=3)))
                assert res.samples == 36 and not res.failed
            out[name] = [(s.problem_id, s.index, s.sample.text, s.answer, s.correct, _u(s.sample.usage))
                         for s in st.samples(rid)]
    assert len(out["ray"]) == 36
    assert out["ray"] == out["local"]


def test_cli_eval_with_ray_matches_plain_eval(cluster, tmp_path, capsys):
    import json

    with FakeOpenAIServer(answers={"42": 0.6, "41": 0.4}) as srv:
        common = ["eval", "--task", "gsm8k", "--limit", "6", "-n", "3", "--backend", "openai", "--base-url", srv.url,
                  "--seed", "5", "--json", "--api-key", "k"]
        outs = []
        for extra in ([], ["--ray", cluster.address, "--shards", "3"]):
            try:
                main([*common, "--store", str(tmp_path / f"r{len(outs)}.db"), *extra])
            except SystemExit as e:
                assert not e.code
            outs.append(json.loads(capsys.readouterr().out))
    strip = [[(r["problem"], r["answer"], r["correct"], r["usage"]["completion_tokens"], r["usage"]["calls"])
              for r in o["rows"]] for o in outs]
    assert strip[0] == strip[1] and len(strip[0]) == 6
    assert outs[0]["accuracy"] == outs[1]["accuracy"]
    with RunStore(tmp_path / "r1.db", readonly=True) as st:
        (run,) = st.list_runs()
        assert run.status == "done" and len(st.samples(run.id)) == 18
        assert {s.sample.endpoint for s in st.samples(run.id)} == {srv.url.rstrip("/")}


def test_sharded_eval_resumes_a_partial_run_without_redoing_problems(cluster, tmp_path):
    spec = _spec("scripted", backend_options={"handler": HANDLER}, limit=8)
    _, res0 = _in_process(spec, tmp_path / "local.db")
    problems = _problems(spec)
    half = _spec("scripted", backend_options={"handler": HANDLER}, limit=3)
    rid, _ = _in_process(half, tmp_path / "ray.db")  # a run that stopped after 3 problems
    with RunStore(tmp_path / "ray.db") as st:
        st.put_problems(rid, problems)
        before = {d.problem_id: d for d in st.decisions(rid)}
        seen = []
        res = asyncio.run(evaluate_ray(spec, problems, store=st, run_id=rid, ray_config=RayConfig(shards=2),
                                       on_progress=seen.append))
        after = {d.problem_id: d for d in st.decisions(rid)}
    assert [p.done for p in seen] == list(range(4, 9))  # only the 5 missing problems ran
    assert all(after[k] == v for k, v in before.items())
    assert [(r.problem_id, r.answer, r.correct, _u(r.usage)) for r in res.rows] == \
           [(r.problem_id, r.answer, r.correct, _u(r.usage)) for r in res0.rows]


def test_worker_that_cannot_build_its_backend_fails_with_one_line(cluster, tmp_path):
    from thinktwice.errors import ConfigError

    spec = _spec("scripted", backend_options={"no_such_option": 1}, limit=2)
    problems = _problems(spec)
    with RunStore(tmp_path / "ray.db") as st:
        rid = st.create_run(kind="eval", config=spec)
        with pytest.raises(ConfigError, match="no_such_option"):
            asyncio.run(evaluate_ray(spec, problems, store=st, run_id=rid, ray_config=RayConfig(max_retries=1)))
        assert st.done_problems(rid) == set()


def test_cli_sample_with_ray_matches_plain_sample(cluster, tmp_path, capsys):
    with FakeOpenAIServer(answers={"42": 0.6, "41": 0.4}) as srv:
        common = ["sample", "--task", "gsm8k", "--limit", "4", "-n", "5", "--batch", "2", "--backend", "openai",
                  "--base-url", srv.url, "--seed", "2", "--api-key", "k", "--top-logprobs", "2"]
        for i, extra in enumerate(([], ["--ray", cluster.address, "--shards", "2"])):
            try:
                main([*common, "--store", str(tmp_path / f"p{i}.db"), *extra])
            except SystemExit as e:
                assert not e.code
        capsys.readouterr()
    rows = []
    for i in range(2):
        with RunStore(tmp_path / f"p{i}.db", readonly=True) as st:
            (run,) = st.list_runs()
            assert run.kind == "pool" and run.status == "done"
            rows.append([(s.problem_id, s.index, s.sample.text, s.answer, s.correct, _u(s.sample.usage),
                          s.sample.endpoint) for s in st.samples(run.id)])
    assert len(rows[1]) == 20 and rows[1] == rows[0]
    assert {r[-1] for r in rows[1]} == {srv.url.rstrip("/")}  # the endpoint of every sample is recorded


def test_embedded_backend_runs_one_replica_per_worker(cluster, tmp_path):
    pytest.importorskip("torch")
    spec = _spec("organism", task="arith", limit=6, strategy_options={"n": 3}, concurrency=2)
    _, res0 = _in_process(spec, tmp_path / "local.db")
    problems = _problems(spec)
    pids = set()
    with RunStore(tmp_path / "ray.db") as st:
        rid = st.create_run(kind="eval", config=spec)
        st.put_problems(rid, problems)
        res = asyncio.run(evaluate_ray(spec, problems, store=st, run_id=rid, on_worker_pid=pids.add,
                                       ray_config=RayConfig(num_cpus=1, shards=4)))
    assert len(pids) == 2  # one model replica in each worker process (one per CPU of the cluster)
    assert [(r.problem_id, r.answer, r.correct, _u(r.usage)) for r in res.rows] == \
           [(r.problem_id, r.answer, r.correct, _u(r.usage)) for r in res0.rows]


def test_a_rejected_api_key_stops_the_sharded_run_with_the_backend_error(cluster, tmp_path):
    from thinktwice.errors import AuthenticationError

    with FakeOpenAIServer(api_key="right") as srv:
        spec = _spec("openai", base_url=srv.url, limit=4)
        problems = _problems(spec)
        with RunStore(tmp_path / "ray.db") as st:
            rid = st.create_run(kind="eval", config=spec)
            with pytest.raises(AuthenticationError, match="API key"):
                asyncio.run(evaluate_ray(spec, problems, store=st, run_id=rid, api_key="wrong",
                                         ray_config=RayConfig(shards=2)))
            assert st.done_problems(rid) == set()
