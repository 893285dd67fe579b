"""The ``--ray`` options shared by ``thinktwice eval`` and ``thinktwice sample``, and the sharded
``sample`` run (see docs/scale.md and :mod:`thinktwice.eval.distributed`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand

from thinktwice.cli.common import err, out, progress_bar, run_async
from thinktwice.errors import ConfigError

__all__ = [
    "RayCpusOpt", "RayGpusOpt", "RayOpt", "RayOptionCommand", "RayWorkersOpt", "ShardsOpt", "ray_config",
    "run_sample_ray",
]


class RayOptionCommand(TyperCommand):
    """Lets ``--ray`` be given without a value (``--ray`` alone means a local Ray instance)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        fixed: list[str] = []
        for i, a in enumerate(args):
            fixed.append(a)
            if a == "--ray" and (i + 1 == len(args) or args[i + 1].startswith("-")):
                fixed.append("local")
        return super().parse_args(ctx, fixed)


RayOpt = typer.Option(None, "--ray", metavar="[ADDRESS]",
                      help="Run on Ray: alone = a local instance; auto, HOST:PORT or ray://HOST:PORT = that cluster.")
ShardsOpt = typer.Option(None, "--shards", help="With --ray: work units (default 4 x workers).")
RayWorkersOpt = typer.Option(None, "--ray-workers", help="With --ray: actors, one backend replica each "
                                                         "(default: cluster CPUs / --ray-cpus or GPUs / --ray-gpus).")
RayCpusOpt = typer.Option(1.0, "--ray-cpus", help="With --ray: CPUs per worker.")
RayGpusOpt = typer.Option(0.0, "--ray-gpus", help="With --ray: GPUs per worker (1 = one replica per GPU).")


def ray_config(address: str | None, shards: int | None, workers: int | None, cpus: float, gpus: float) -> Any:
    """The RayConfig of the --ray options, or None without --ray."""
    if address is None:
        return None
    from thinktwice.eval.distributed import RayConfig

    return RayConfig(address=address, shards=shards, workers=workers, num_cpus=cpus, num_gpus=gpus)


def run_sample_ray(spec: dict[str, Any], *, store_path: Path, resume: int | None, api_key: str | None,
                   ray: Any) -> int:
    """``thinktwice sample`` on Ray: create (or resume) the pool run of ``spec`` and draw every missing
    sample on the cluster's workers; the driver stores each round. Returns the number of problems left
    incomplete."""
    import os
    import types

    import ray as ray_mod

    from thinktwice.eval.distributed import connect, draw_pool_ray
    from thinktwice.eval.pool import PoolConfig, create_pool_run
    from thinktwice.eval.store import DONE, FAILED, WITH_FAILURES, RunStore
    from thinktwice.registry import tasks

    config = PoolConfig(**spec["pool"])
    task = tasks.create(spec["task"], **spec.get("task_options", {}))
    problems = list(task.load(spec.get("split", "test"), limit=spec.get("limit")))
    if not problems:
        raise ConfigError(f"task {spec['task']!r} has no problems in split {spec.get('split', 'test')!r}")
    if spec["backend"].partition(":")[0] == "openai" and not spec.get("base_url"):
        spec = {**spec, "base_url": os.environ.get("OPENAI_BASE_URL")}  # workers may not share the env
    # the backend lives on the workers only; the run records its name and the model asked for
    who = types.SimpleNamespace(name=spec["backend"].partition(":")[0], model=spec.get("model"))
    owns = connect(ray.address)
    try:
        with RunStore(store_path) as store:
            if resume is None:
                run_id = create_pool_run(store, task, who, problems, config, spec=spec)  # type: ignore[arg-type]
            else:
                run_id = resume
                store.claim_run(run_id)
            err.print(f"pool run {run_id} -> {store_path} (on Ray)")
            bar = progress_bar("sample", "{task.fields[problems]}", "{task.fields[tps]} tok/s", eta_label=True)
            with bar:
                tid = bar.add_task("sample", total=config.n * len(problems), problems="", tps="-")

                def on_progress(p: Any) -> None:
                    bar.update(tid, completed=p.samples, problems=f"{p.problems_done}/{p.problems} problems",
                               tps=f"{p.tokens_per_second:.0f}")

                try:
                    result = run_async(draw_pool_ray(spec, problems, store, run_id, config, ray_config=ray,
                                                     api_key=api_key, on_progress=on_progress))
                except BaseException:
                    store.set_status(run_id, FAILED)
                    raise
            counts = store.sample_counts(run_id)
            complete = sum(counts.get(p.id, 0) >= config.n for p in problems)
            store.set_status(run_id, DONE if complete == len(problems) else WITH_FAILURES)
    finally:
        if owns:
            ray_mod.shutdown()
    rate = result.completion_tokens / result.seconds if result.seconds > 0 else 0.0
    out.print(f"run {run_id}: {complete}/{len(problems)} problems complete, {result.samples} samples drawn now "
              f"({result.completion_tokens} tokens, {rate:.0f} tok/s)")
    if result.failed:
        err.print(f"[yellow]{len(result.failed)} problem(s) failed (run {run_id} is completed-with-failures); "
                  f"`thinktwice sample --resume {run_id}` retries them")
    return len(problems) - complete
