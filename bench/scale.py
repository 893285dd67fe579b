"""Scale-out benchmark: a sharded eval on 2 local Ray workers against the in-process runner.

1. Throughput. A fake OpenAI upstream (its own process, fixed latency, default 50 ms) serves
   self-consistency n=4 on the first P gsm8k problems. Rows: the in-process runner at concurrency
   C and 2C, then Ray with 1 and 2 workers of C problems in flight each. Wall time counts from the
   call to the end; "steady" leaves out the one-off start of the worker actors (process spawn,
   imports, backend build), timed from the first shard report. The headline speedup is the
   2-worker Ray run (steady) over the in-process run at the same per-process concurrency C.
2. Overhead per sample of the Ray path. Same eval on the scripted backend (zero latency, so every
   microsecond is harness cost): (Ray steady wall with 1 worker - in-process wall) / samples, at
   equal concurrency. This is what shipping decisions through Ray's object store, scheduling the
   shards and the streaming generator round trips add per sample; store writes happen in both.
   With 1 worker the shard's strategy code and the driver's store writes run in two processes, so
   part of the cost overlaps; the driver's own CPU time per sample is shown next to it.

Both paths write a SQLite run store (the driver alone in the Ray path), as the CLI does.

    python bench/scale.py [--problems 400] [--n 4] [--concurrency 8] [--latency 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(stderr=True)
HANDLER = "thinktwice.testing.scripted_handlers:seeded_answer"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spec(backend: str, base_url: str | None, limit: int, n: int, concurrency: int) -> dict[str, Any]:
    return {"task": "gsm8k", "task_options": {}, "split": "test", "limit": limit, "strategy": "self-consistency",
            "strategy_options": {"n": n}, "backend": backend,
            "backend_options": {"handler": HANDLER} if backend == "scripted" else {}, "base_url": base_url,
            "model": None, "concurrency": concurrency, "seed": 0}


def _store(tmp: Path, name: str, spec: dict[str, Any], problems: list[Any]) -> tuple[Any, int]:
    from thinktwice.eval.store import RunStore

    st = RunStore(tmp / f"{name}.db")
    rid = st.create_run(kind="eval", config=spec)
    st.put_problems(rid, problems)
    return st, rid


def run_local(spec: dict[str, Any], problems: list[Any], tmp: Path, name: str) -> dict[str, float]:
    from thinktwice.eval.distributed import build_backend
    from thinktwice.eval.runner import evaluate
    from thinktwice.registry import tasks
    from thinktwice.strategies import create_strategy

    task = tasks.create(spec["task"])
    strategy = create_strategy(spec["strategy"], **spec["strategy_options"])
    backend = build_backend(spec, None, spec["concurrency"])
    st, rid = _store(tmp, name, spec, problems)

    async def go() -> Any:
        try:
            return await evaluate(task, strategy, backend, problems, store=st, run_id=rid,
                                  concurrency=spec["concurrency"], seed=spec["seed"])
        finally:
            await backend.aclose()

    t0, c0 = time.perf_counter(), time.process_time()
    res = asyncio.run(go())
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    samples = sum(st.sample_counts(rid).values())
    st.close()
    return {"wall": wall, "steady": wall, "samples": samples, "acc": res.accuracy, "cpu": cpu}


def run_ray(spec: dict[str, Any], problems: list[Any], tmp: Path, name: str, workers: int) -> dict[str, float]:
    from thinktwice.eval.distributed import RayConfig, evaluate_ray

    st, rid = _store(tmp, name, spec, problems)
    first: list[float] = []
    t0, c0 = time.perf_counter(), time.process_time()
    res = asyncio.run(evaluate_ray(spec, problems, store=st, run_id=rid, ray_config=RayConfig(workers=workers),
                                   on_worker_pid=lambda _: first.append(time.perf_counter())))
    end, cpu = time.perf_counter(), time.process_time() - c0
    samples = sum(st.sample_counts(rid).values())
    st.close()
    return {"wall": end - t0, "steady": end - min(first), "samples": samples, "acc": res.accuracy, "cpu": cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=400)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--latency", type=float, default=0.05)
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from thinktwice.registry import tasks

    problems = list(tasks.create("gsm8k").load("test", limit=args.problems))
    port = _free_port()
    upstream = subprocess.Popen([sys.executable, "-m", "thinktwice.testing.fake_openai", "--port", str(port),
                                 "--latency", str(args.latency)], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        import httpx

        for _ in range(100):
            try:
                httpx.get(url + "/models", timeout=1.0)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024 * 1024,
                 logging_level="WARNING", log_to_driver=False)
        ray_start = time.perf_counter() - t0
        c = args.concurrency
        rows: list[tuple[str, dict[str, float]]] = []
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            fake = lambda conc: _spec("openai", url, args.problems, args.n, conc)
            rows.append((f"in-process, concurrency {c}", run_local(fake(c), problems, tmp, "l1")))
            rows.append((f"in-process, concurrency {2 * c}", run_local(fake(2 * c), problems, tmp, "l2")))
            rows.append((f"ray, 1 worker x {c}", run_ray(fake(c), problems, tmp, "r1", 1)))
            rows.append((f"ray, 2 workers x {c}", run_ray(fake(c), problems, tmp, "r2", 2)))
            scripted = _spec("scripted", None, args.problems, args.n, c)
            run_local(scripted, problems, tmp, "warm")  # imports and caches warm for both paths
            s_local = run_local(scripted, problems, tmp, "s1")
            s_ray = run_ray(scripted, problems, tmp, "s2", 1)
        load = os.getloadavg()[0]
    finally:
        upstream.terminate()
        upstream.wait(timeout=10)
        if ray.is_initialized():
            ray.shutdown()

    table = Table(title=f"SC n={args.n} on {args.problems} gsm8k problems, fake upstream {args.latency * 1000:.0f} ms "
                        f"({os.cpu_count()} CPUs, load {load:.1f}; ray.init {ray_start:.1f} s)")
    for col in ("path", "samples", "wall s", "steady s", "samples/s (steady)", "accuracy"):
        table.add_column(col, justify="left" if col == "path" else "right")
    for name, r in rows:
        table.add_row(name, f"{r['samples']:.0f}", f"{r['wall']:.2f}", f"{r['steady']:.2f}",
                      f"{r['samples'] / r['steady']:.0f}", f"{r['acc']:.3f}")
    console.print(table)
    over = Table(title="harness cost on the scripted backend (zero latency), concurrency "
                       f"{args.concurrency}, 1 worker")
    for col in ("path", "samples", "wall s", "steady s", "ms/sample", "driver CPU ms/sample"):
        over.add_column(col, justify="left" if col == "path" else "right")
    for name, r in (("in-process", s_local), ("ray, 1 worker", s_ray)):
        over.add_row(name, f"{r['samples']:.0f}", f"{r['wall']:.2f}", f"{r['steady']:.2f}",
                     f"{1000 * r['steady'] / r['samples']:.3f}", f"{1000 * r['cpu'] / r['samples']:.3f}")
    console.print(over)
    base, two = rows[0][1], rows[3][1]
    overhead = 1000 * (s_ray["steady"] - s_local["steady"]) / s_local["samples"]
    print(f"ray_speedup_2_workers: {base['steady'] / two['steady']:.2f}")
    print(f"ray_speedup_2_workers_incl_startup: {base['wall'] / two['wall']:.2f}")
    print(f"ray_overhead_ms_per_sample: {overhead:.3f}")


if __name__ == "__main__":
    main()
