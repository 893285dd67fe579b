"""Adaptive sampling against self-consistency@16 on stored pools of samples (METHODS §6).

Replays self-consistency@16, Adaptive-Consistency (Beta rule 0.95), ESC (windows of 5) and
DeepConf online through :class:`thinktwice.lm.pool.PoolBackend`, with common random orders: for
each order every strategy sees the same sample stream, so accuracy differences are paired. The
strategies are the live ones, so every figure is what the live method gives on that stream (and
what ``thinktwice curve`` replays for the same settings: tests/eval/test_replay_vs_live.py).
Calls and prompt tokens are billed as the backend that drew the pool could (one call per round
with native n, else one per sample; a stored pool run records which, ``--native-n`` overrides).
Prints accuracy, the paired difference against SC@16 with a bootstrap CI, and the share of
SC@16's samples and generated tokens each strategy used. Target: within 1 point of SC@16 with at
most 40% of its generated tokens.

Where the pool comes from, in order of preference:
  --store S [--run R]        a stored pool run (default: the store's newest); repeat --store for
                             one combined table over several pools
  --backend B --task T       drawn live now (e.g. ``--backend organism --task arith``)
  (default)                  the organism on arith when its backend is installed, else a
                             synthetic pool (seeded; stated in the output)

The methods run at their paper defaults (Beta rule 0.95, ESC windows of 5, DeepConf keep-90% with
consensus 0.95); only the caps follow the pool. The baseline is always SC@n (n = 16). The adaptive
strategies are capped at n, and on a pool of at least 40 samples per problem also at the methods'
default of 40 (``--cap`` overrides both), so the extra headroom is measured against the same SC@16.
DeepConf online warms up on 4 traces: its paper default of 16 would spend SC@16's whole budget
before deciding anything. The combined table also gives, per pool, how concentrated the stored
answers are (mean modal share, and the chance that four draws agree): early stops need agreement.
The last lines are the headline pool's figures (``--headline I``: the I-th --store, default 0).

    python bench/adaptive.py
    python bench/adaptive.py --store runs.db --run 3
    python bench/adaptive.py --store a.db --store b.db --store c.db
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from thinktwice.eval.matched import paired_difference, replay_strategy
from thinktwice.lm.pool import PoolSource
from thinktwice.lm.scripted import synthetic_stat
from thinktwice.types import Problem, Prompt, Sample, SamplingParams, Usage

log = logging.getLogger("bench.adaptive")
err = Console(stderr=True)


# -- a synthetic pool: difficulty-varying answer distributions with confidence that tracks correctness --
@dataclass(frozen=True)
class SyntheticTask:
    """Answers are the word after '####'; the gold is 'A0'."""

    name: str = "synthetic"
    version: str = "1"
    prompt_version: str = "1"
    grader_version: str = "1"

    def extract(self, text: str) -> str | None:
        _, sep, tail = text.rpartition("####")
        return tail.strip() or None if sep else None

    def canonical(self, answer: str) -> str:
        return answer.strip()

    def equivalent(self, a: str, b: str) -> bool:
        return a.strip() == b.strip()

    def load(self, split: str = "test", limit: int | None = None) -> list[Problem]:
        raise NotImplementedError

    def prompt(self, problem: Problem) -> Prompt:
        return Prompt.user(problem.question)

    def params(self) -> SamplingParams:
        return SamplingParams(max_tokens=256)

    def grade(self, answer: str | None, problem: Problem) -> bool:
        return answer is not None and answer.strip() == (problem.gold or "")


def synthetic_pool(n_problems: int, n: int, seed: int) -> tuple[list[Problem], dict[str, list[Sample]]]:
    """Per problem a correct-answer rate (easy / medium / hard mix) and three distractors; wrong
    traces are a little less confident and half of them hold a low-confidence stretch."""
    rng = random.Random(seed)
    problems, pools = [], {}
    for i in range(n_problems):
        r = rng.random()
        q = rng.uniform(0.7, 1.0) if r < 0.5 else rng.uniform(0.3, 0.7) if r < 0.8 else rng.uniform(0.0, 0.3)
        w = [rng.random() for _ in range(3)]
        probs = [q] + [(1 - q) * x / sum(w) for x in w]
        pid = f"s{i}"
        problems.append(Problem(pid, f"synthetic problem {i}", gold="A0"))
        samples = []
        for _ in range(n):
            a = rng.choices(range(4), probs)[0]
            length = rng.randint(30, 80)
            base = rng.uniform(0.75, 0.95) if a == 0 else rng.uniform(0.6, 0.9)
            confs = [min(0.99, max(0.05, rng.gauss(base, 0.05))) for _ in range(length)]
            if a != 0 and rng.random() < 0.5:
                start = rng.randrange(0, length - 8)
                for j in range(start, start + 8):
                    confs[j] = rng.uniform(0.2, 0.4)
            words = [" step"] * (length - 2) + [" ####", f" A{a}"]
            toks = tuple(synthetic_stat(t, c, 1000, 5) for t, c in zip(words, confs))
            samples.append(Sample("".join(words), toks, usage=Usage(1, 40, 0, length), model="synthetic"))
        pools[pid] = samples
    return problems, pools


def store_pool(path: str, run_id: int) -> tuple[object, list[Problem], dict[str, list[Sample]], bool | None]:
    import thinktwice.tasks  # noqa: F401
    from thinktwice.eval.store import RunStore
    from thinktwice.registry import tasks

    if not Path(path).exists():
        raise SystemExit(f"no run store at {path}")
    with RunStore(path) as st:
        info = st.get_run(run_id)
        problems = st.problems(run_id)
        source = PoolSource.from_store(st, run_id)
    task = tasks.create(info.task, **info.config.get("task_options", {}))
    return task, [p for p in problems if p.id in source], source.pools, source.native_n


async def live_pool(backend_spec: str, task_name: str, limit: int, n: int, seed: int,  # type: ignore[no-untyped-def]
                    temperature: float):
    import thinktwice.tasks  # noqa: F401
    from thinktwice import lm
    from thinktwice.eval.matched import draw_pool
    from thinktwice.registry import tasks

    if task_name in tasks:
        task = tasks.create(task_name)
    elif task_name == "arith":  # the organism's task, before its registry line lands
        from thinktwice.tasks.arith import ArithTask

        task = ArithTask()
    else:
        task = tasks.create(task_name)  # raises the registry's "did you mean"
    problems = list(task.load("test", limit=limit))
    backend = lm.create(backend_spec)
    try:
        pools = await draw_pool(task, backend, problems, n, seed=seed, temperature=temperature)
    finally:
        await backend.aclose()
    return task, problems, pools


# -- the replay ----------------------------------------------------------------------------------------
METHODS = (("adaptive", "adaptive-consistency"), ("esc", "esc"), ("deepconf", "deepconf-online"))


def method_specs(n: int, cap: int, window: int) -> dict[str, object]:
    """The adaptive strategies at their paper defaults, capped at ``cap`` samples.

    Beta rule 0.95; ESC windows of 5 (the cap is rounded down to whole windows); DeepConf online
    keep-90% (percentile 90), consensus 0.95, warm-up 4 (its default of 16 would spend SC@16's
    whole budget before deciding anything) in batches of 4, group window ``window`` tokens.
    """
    from thinktwice.strategies import create_strategy

    suffix = "" if cap == n else f" (cap {cap})"
    return {
        f"adaptive-consistency{suffix}": create_strategy("adaptive-consistency", max_samples=cap),
        f"esc{suffix}": create_strategy("esc", max_samples=cap - cap % 5 if cap >= 5 else cap, window=min(5, cap)),
        f"deepconf-online{suffix}": create_strategy("deepconf-online", warm_up=min(4, cap), max_samples=cap,
                                                    window=window, batch=4),
    }


def pool_concentration(task, problems: Sequence[Problem], pools) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """How concentrated the stored answers are, from each problem's whole pool: the mean share of
    its most frequent answer, and the mean chance ``Σ_a p_a^4`` that four draws all give the same
    answer (``p_a``: the pool's answer frequencies). The Beta rule cannot stop before four agreeing
    samples and ESC before five, so the second figure bounds how often either stops that early."""
    from thinktwice.strategies.voting import group_answers

    modal, agree4 = [], []
    for p in problems:
        samples = pools[p.id]
        sizes = [len(c.members) for c in group_answers([task.extract(s.text) for s in samples], task)]
        total = max(1, len(samples))
        modal.append(max(sizes, default=0) / total)
        agree4.append(sum((k / total) ** 4 for k in sizes))
    return sum(modal) / max(1, len(modal)), sum(agree4) / max(1, len(agree4))


async def run(task, problems: Sequence[Problem], pools, n: int, orders: int, window: int,  # type: ignore[no-untyped-def]
              caps: Sequence[int] = (), native_n: bool | None = None) -> list[dict]:
    """Replay SC@``n`` and the adaptive strategies (once per cap in ``caps``, default ``n``) on
    one pool; rows carry the paired difference against SC@``n`` measured in the same replay.
    ``native_n``: bill as a backend with (True) or without (False) native n; None: native n."""
    from thinktwice.strategies import create_strategy

    source = PoolSource(pools, native_n=native_n)
    size = source.min_size()
    caps = list(caps) or [n]
    if size < max(n, *caps):
        raise SystemExit(f"the pool holds {size} samples for some problem; {max(n, *caps)} are needed")
    seeds = list(range(orders))
    specs: dict[str, object] = {f"self-consistency@{n}": create_strategy("self-consistency", n=n)}
    for cap in caps:
        specs.update(method_specs(n, cap, window))
    results = {}
    for name, strat in specs.items():
        t0 = time.perf_counter()
        results[name] = await replay_strategy(strat, source, task, problems, seeds=seeds)  # type: ignore[arg-type]
        err.print(f"{name}: replayed {len(problems)} x {orders} in {time.perf_counter() - t0:.1f}s")
    base = results[f"self-consistency@{n}"]
    rows = []
    for name, r in results.items():
        d = paired_difference(r.accuracy, base.accuracy)
        rows.append({
            "name": name, "acc": r.mean_accuracy, "delta": d.delta, "lo": d.lo, "hi": d.hi,
            "samples": r.samples_per_problem, "sample_share": r.samples_per_problem / base.samples_per_problem,
            "tokens": r.per_problem("completion_tokens"),
            "token_share": r.per_problem("completion_tokens") / base.per_problem("completion_tokens"),
            "calls": r.per_problem("calls"), "prompt": r.per_problem("prompt_tokens"),
        })
    return rows


def meets_target(row: dict) -> bool:
    """Issue target: within 1 point of SC@16 (point estimate) with at most 40% of its generated tokens."""
    return row["delta"] >= -0.01 and row["token_share"] <= 0.40


# -- pools from stores ---------------------------------------------------------------------------------
def pick_run(path: str, run_id: int | None) -> int:
    """``run_id`` or, when None, the newest finished pool run of the store."""
    from thinktwice.eval.store import RunStore

    if run_id is not None:
        return run_id
    if not Path(path).exists():
        raise SystemExit(f"no run store at {path}")
    with RunStore(path, readonly=True) as st:
        runs = [r for r in st.list_runs() if r.kind == "pool" and r.status == "done"] or st.list_runs()
    if not runs:
        raise SystemExit(f"{path} holds no runs")
    return max(runs, key=lambda r: r.id).id


def pool_label(path: str, run_id: int) -> str:
    """A short description of a stored pool: model, task options, temperature and size."""
    from thinktwice.eval.store import RunStore

    with RunStore(path, readonly=True) as st:
        info = st.get_run(run_id)
    cfg = info.config
    opts = ",".join(f"{k}={v}" for k, v in sorted(cfg.get("task_options", {}).items())) or "default"
    pool = cfg.get("pool", {})
    model = (info.model or info.backend or "?").removeprefix("organism-")
    return f"{model} {info.task} {opts} T={pool.get('temperature', '?')} n={pool.get('n', '?')}"


def print_pool_table(rows: list[dict], title: str, source: str, n: int) -> None:
    table = Table(title=escape(title))
    for col in ("strategy", "accuracy", f"Δ vs SC@{n} [95% CI]", "samples", "sample share", "gen tokens",
                "token share", "calls", "prompt tokens"):
        table.add_column(col, justify="left" if col == "strategy" else "right")
    for r in rows:
        table.add_row(r["name"], f"{r['acc']:.4f}", f"{r['delta']:+.4f} [{r['lo']:+.4f}, {r['hi']:+.4f}]",
                      f"{r['samples']:.2f}", f"{r['sample_share']:.3f}", f"{r['tokens']:.1f}",
                      f"{r['token_share']:.3f}", f"{r['calls']:.2f}", f"{r['prompt']:.0f}")
    if source == "synthetic":
        table.caption = ("synthetic pool: wrong traces are built less confident (and half hold a low-confidence "
                         "stretch), so DeepConf's gain here is by construction, not evidence")
    Console(width=160).print(table)


def print_combined_table(pools: list[dict], n: int, orders: int) -> None:
    table = Table(title=f"adaptive sampling vs SC@{n} over {len(pools)} pools ({orders} orders each); "
                        f"target: Δ >= -1 point and token share <= 0.40")
    for col in ("pool", f"SC@{n} acc", "modal share", "4 agree", "method", "Δ acc [95% CI]", "token share",
                "sample share", "target"):
        table.add_column(col, justify="left" if col in ("pool", "method") else "right")
    for p in pools:
        first = True
        for r in p["rows"][1:]:
            table.add_row(escape(p["label"]) if first else "", f"{p['sc_acc']:.3f}" if first else "",
                          f"{p['modal'][0]:.3f}" if first else "", f"{p['modal'][1]:.3f}" if first else "",
                          r["name"],
                          f"{100 * r['delta']:+.2f} [{100 * r['lo']:+.2f}, {100 * r['hi']:+.2f}]",
                          f"{r['token_share']:.3f}", f"{r['sample_share']:.3f}",
                          "met" if meets_target(r) else "no", end_section=r is p["rows"][-1])
            first = False
    table.caption = ("Δ in accuracy points against SC@16 replayed on the same orders of the same pool; shares "
                     "are of SC@16's generated tokens / samples; modal share = mean share of a problem's "
                     "most frequent answer in its stored pool; 4 agree = mean chance that 4 draws give one answer")
    Console(width=170).print(table)


def headline_lines(label: str, rows: list[dict], n: int) -> None:
    by = {r["name"]: r for r in rows}
    print(f"headline_pool: {label}")
    print(f"sc{n}_acc: {by[f'self-consistency@{n}']['acc']:.4f}")
    for key, name in METHODS:
        r = by[name]
        print(f"{key}_acc_delta: {r['delta']:+.4f}")
        print(f"{key}_sample_share: {r['sample_share']:.3f}")
        print(f"{key}_token_share: {r['token_share']:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", action="append", default=[],
                    help="a run store holding a pool (repeat for a combined table over several pools)")
    ap.add_argument("--run", type=int, action="append", default=[],
                    help="the pool run of each --store (one per store, or one for all; default: the newest)")
    ap.add_argument("--label", action="append", default=[], help="a name for each --store's pool")
    ap.add_argument("--cap", type=int, action="append", default=[],
                    help="sample caps of the adaptive strategies (repeatable; default: n, and also the "
                         "methods' default 40 on a pool that holds 40 samples per problem)")
    ap.add_argument("--headline", type=int, default=0, help="index of the --store whose figures end the output")
    ap.add_argument("--backend"), ap.add_argument("--task", default="arith")
    ap.add_argument("--problems", type=int, default=300)
    ap.add_argument("-n", type=int, default=16)
    ap.add_argument("--orders", type=int, default=5, help="common random orders of each pool")
    ap.add_argument("--window", type=int, default=8, help="DeepConf group window (short traces here)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--temperature", type=float, default=0.8, help="sampling temperature of a live pool")
    ap.add_argument("--native-n", choices=("recorded", "yes", "no"), default="recorded",
                    help="bill calls as a backend with native n (yes), without (no), or as the pool run "
                         "recorded its backend (default; native n when unrecorded)")
    a = ap.parse_args()
    billing = {"yes": True, "no": False}.get(a.native_n)
    logging.basicConfig(level=logging.WARNING)
    if a.store:
        if a.run and len(a.run) not in (1, len(a.store)):
            raise SystemExit("give one --run for all stores or one per --store")
        if a.label and len(a.label) != len(a.store):
            raise SystemExit("give one --label per --store")
        if not 0 <= a.headline < len(a.store):
            raise SystemExit(f"--headline must be in 0..{len(a.store) - 1}")
        runs = [a.run[0] if len(a.run) == 1 else a.run[i] if a.run else None for i in range(len(a.store))]
        loaded = []
        for i, (path, run_id) in enumerate(zip(a.store, runs)):
            rid = pick_run(path, run_id)
            task, problems, pools, recorded = store_pool(path, rid)
            label = a.label[i] if a.label else pool_label(path, rid)
            native = recorded if a.native_n == "recorded" else billing
            loaded.append((label, task, problems, pools, f"store {Path(path).name} run {rid}", native))
        results = []
        for label, task, problems, pools, source, native in loaded:
            err.print(f"{escape(label)}: {len(problems)} problems ({source})")
            caps = a.cap or ([a.n, 40] if a.n < 40 <= PoolSource(pools).min_size() else [a.n])
            rows = asyncio.run(run(task, problems, pools, a.n, a.orders, a.window, caps, native))
            results.append({"label": label, "source": source, "rows": rows, "sc_acc": rows[0]["acc"],
                            "modal": pool_concentration(task, problems, pools), "problems": len(problems)})
        if len(results) == 1:
            r = results[0]
            print_pool_table(r["rows"], f"adaptive sampling vs SC@{a.n}: {r['problems']} problems, pool: "
                                        f"{r['label']} ({r['source']}), {a.orders} orders", r["source"], a.n)
        else:
            print_combined_table(results, a.n, a.orders)
        for r in results:
            print(f"pool: {r['label']} ({r['source']}, {r['problems']} problems)")
        head = results[a.headline]
        headline_lines(head["label"], head["rows"], a.n)
        sys.stdout.flush()
        return
    source = "synthetic"
    task = None
    spec = a.backend or "organism"
    try:
        task, problems, pools = asyncio.run(live_pool(spec, a.task, a.problems, a.n, a.seed, a.temperature))
        source = f"{spec} on {a.task}, T={a.temperature}, drawn now"
    except Exception as e:
        if a.backend:
            raise
        err.print(f"[yellow]organism pool unavailable ({type(e).__name__}: {e}); using a synthetic pool")
    if task is None:
        task = SyntheticTask()
        problems, pools = synthetic_pool(a.problems, a.n, a.seed)
    caps = a.cap or [a.n]
    rows = asyncio.run(run(task, problems, pools, a.n, a.orders, a.window, caps, billing))
    print_pool_table(rows, f"adaptive sampling vs SC@{a.n}: {len(problems)} problems, pool: {source}, "
                           f"{a.orders} orders", source, a.n)
    print(f"pool: {source}")
    headline_lines(source, rows, a.n)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
