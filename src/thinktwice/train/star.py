"""STaR / RFT self-training of the organism, monitored with B-STaR, with a gold-data control arm.

STaR (Zelikman et al., arXiv 2203.14465), RFT (Yuan et al., arXiv 2308.01825), B-STaR (Zeng et
al., arXiv 2412.17256); METHODS.md §10. Each iteration ``n``:

1. samples ``k`` solutions per TRAIN-split problem from ``M_{n-1}`` at the iteration's temperature;
2. selects the samples whose reward (:meth:`Scored.score`: right final answer, plus 0.5 for valid
   equations) reaches the threshold (1.0 = final-answer filter; 1.5 = ``verify_steps``), merges
   identical reasoning paths (the equation sequence) and keeps at most ``max_per_problem`` per problem;
   with ``rationalize`` (STaR's rationalization), the problems left with nothing are sampled again
   with the gold answer as a hint (:func:`hinted_question`), filtered the same way, and their
   rationales are trained on WITHOUT the hint;
3. fine-tunes ``M_n`` from the base (``restart="base"``, STaR) or from ``M_{n-1}`` (``"continue"``);
4. measures held-out greedy accuracy on TEST-split problems (never sampled for training).

Without ``rationalize`` the loop is STaR without rationalization (an RFT-style loop); it is off by
default because the organism never saw a hint in training (see docs/training.md). Every generation
for training data (sampling, rationalization, ``adapt``) is billed in the record's ``usage``.

The B-STaR monitor is logged per iteration; with ``adapt`` the (temperature, threshold) pair with the
best mean balance score on a small train subset is chosen before sampling. ``control``: a twin run
fine-tunes for the same steps, with the same restart policy, on the gold solutions of the same
problems (``control_gold``: one random order per problem, as the base was trained; the story
order; every order) or on ``"stream"``: fresh gold train problems, never repeated (continued
pre-training, the strongest "more training" baseline), so that "more training" is not mistaken for a STaR gain.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from thinktwice.errors import ConfigError
from thinktwice.train.bstar import BStarStats, Scored, arith_steps_valid, measure, path_key
from thinktwice.train.formats import sft_record, write_jsonl
from thinktwice.types import Usage

__all__ = ["StarConfig", "StarResult", "dev_problems", "eval_greedy", "hinted_question", "loop_name", "plot_bstar",
           "run_star", "sample_scored"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StarConfig:
    iterations: int = 3
    k: int = 8
    temperature: float = 0.8
    restart: str = "base"  # "base" (STaR: M_n from M_0) or "continue" (from M_{n-1})
    problems: int = 128  # train-split problems sampled each iteration
    eval_problems: int = 300  # held-out test-split problems, greedy
    dev_problems: int = 0  # > 0: also greedy accuracy on train-split problems never sampled (for choosing settings)
    steps: int = 64  # fine-tuning steps per iteration
    step_growth: float = 0.0  # steps grow by this fraction per iteration (STaR: 0.2)
    lr: float = 3e-4
    batch_size: int = 8
    verify_steps: bool = False  # select only samples whose every equation is right
    max_per_problem: int = 4
    adapt: bool = False
    temperatures: tuple[float, ...] = (0.6, 0.8, 1.0, 1.2)
    thresholds: tuple[float, ...] = (1.0, 1.5)
    adapt_problems: int = 16
    rationalize: bool = False  # STaR's rationalization: hinted resampling of problems with no kept sample
    control: bool = False
    control_gold: str = "random"  # control data: gold of the same problems (random/story/all orders) or "stream"
    task_steps: int = 7  # difficulty of the arithmetic problems
    distractors: int = 1
    max_tokens: int = 160
    seed: int = 0

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.k < 1 or self.problems < 1 or self.eval_problems < 1 or self.steps < 1:
            raise ConfigError("iterations, k, problems, eval_problems and steps must be >= 1")
        if self.restart not in ("base", "continue"):
            raise ConfigError(f"restart must be 'base' or 'continue', got {self.restart!r}")
        if not self.temperature > 0 or any(t <= 0 for t in self.temperatures):
            raise ConfigError("sampling temperatures must be > 0")
        if self.control_gold not in ("random", "story", "all", "stream"):
            raise ConfigError(f"control_gold must be random, story, all or stream, got {self.control_gold!r}")
        if self.dev_problems < 0:
            raise ConfigError("dev_problems must be >= 0")
        if self.max_per_problem < 1 or self.lr <= 0 or self.step_growth < 0:
            raise ConfigError("max_per_problem >= 1, lr > 0 and step_growth >= 0 are required")

    @property
    def threshold(self) -> float:
        return 1.5 if self.verify_steps else 1.0

    @property
    def name(self) -> str:
        return loop_name(self.rationalize)

    def iteration_steps(self, it: int) -> int:
        return max(1, round(self.steps * (1 + self.step_growth) ** (it - 1)))


@dataclass
class StarResult:
    config: StarConfig
    base_accuracy: float
    iterations: list[dict[str, Any]] = field(default_factory=list)
    control: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    samples: dict[int, list[list[Scored]]] = field(default_factory=dict, repr=False)  # per iteration, not saved
    train_problems: list[Any] = field(default_factory=list, repr=False)
    dev_problems: list[Any] = field(default_factory=list, repr=False)
    base_dev_accuracy: float | None = None
    numerics: dict[str, Any] = field(default_factory=dict)  # what fixes the floating-point results (see run_star)

    @property
    def final_accuracy(self) -> float:
        return self.iterations[-1]["accuracy"] if self.iterations else self.base_accuracy

    @property
    def usage(self) -> dict[str, Usage]:
        """Generation spent on training data, by stage (``sample``, ``rationalize``, ``adapt``) and ``total``."""
        by: dict[str, Usage] = {}
        for r in self.iterations:
            for k, u in r.get("usage", {}).items():
                by[k] = by.get(k, Usage()) + Usage.from_dict(u)
        return {**by, "total": Usage.total(list(by.values()))}

    def to_dict(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "loop": self.config.name, "base_accuracy": self.base_accuracy,
                "base_dev_accuracy": self.base_dev_accuracy,
                "final_accuracy": self.final_accuracy, "iterations": self.iterations, "control": self.control,
                "usage": {k: u.to_dict() for k, u in self.usage.items()}, "numerics": self.numerics,
                "seconds": round(self.seconds, 1)}


def _problems(cfg: StarConfig, split: str, n: int, *, seed: int | None = None,
              avoid: set[str] | frozenset[str] = frozenset()) -> list[Any]:
    """The first ``n`` problems of ``split`` at the config's difficulty from the stream seeded ``seed``
    (default ``cfg.seed``), skipping any whose question is in ``avoid``."""
    from itertools import islice

    from thinktwice.organism import arith

    d = arith.Difficulty(steps=cfg.task_steps, distractors=cfg.distractors)
    stream = arith.generate(cfg.seed if seed is None else seed, d, split=split)
    return list(islice((p for p in stream if p.question not in avoid), n))


def dev_problems(cfg: StarConfig, avoid: set[str]) -> list[Any]:
    """``cfg.dev_problems`` TRAIN-split problems from their own seeded stream, none of them in ``avoid``
    (the problems STaR samples): a dev set for choosing settings without looking at the test split."""
    return _problems(cfg, "train", cfg.dev_problems, seed=cfg.seed + 7919, avoid=avoid)


def loop_name(rationalize: bool) -> str:
    """What the loop is called in tables, plots and records."""
    return "STaR" if rationalize else "STaR without rationalization"


def _answer(text: str) -> str | None:
    from thinktwice.tasks.arith import ArithTask

    return ArithTask().extract(text)


_HINT = " The total is {gold}."  # in the organism's own words (every word is in its vocabulary)


def hinted_question(question: str, gold: int | str) -> str:
    """The organism's rationalization prompt: the question with the gold answer appended as a hint."""
    return question.rstrip() + _HINT.format(gold=gold)


def _sample(ckpt: Any, questions: list[str], golds: list[Any], k: int, temperature: float, *,
            seeds: list[int], max_tokens: int) -> tuple[list[list[Scored]], Usage]:
    """``k`` graded, step-checked samples per question (one batched call each) and their Usage
    (as the organism backend bills it: one call and one prompt prefill per batch)."""
    from thinktwice.organism.generate import generate
    from thinktwice.organism.train import prompt_ids

    tok = ckpt.tokenizer
    out, usage = [], Usage()
    for q, gold, sd in zip(questions, golds, seeds, strict=True):
        ids = prompt_ids(tok, q)
        gens = generate(ckpt.model, tok, ids, k, temperature=temperature, max_tokens=max_tokens, seed=sd,
                        stats=False)
        usage += Usage(calls=1, prompt_tokens=len(ids), completion_tokens=sum(len(g.ids) for g in gens))
        group = []
        for g in gens:
            a = _answer(g.text)
            ok = a is not None and a.strip().lstrip("+") == str(gold)
            group.append(Scored(g.text, a, ok, arith_steps_valid(g.text)))
        out.append(group)
    return out, usage


def sample_scored(ckpt: Any, problems: list[Any], k: int, temperature: float, *, seed: int = 0,
                  max_tokens: int = 160) -> list[list[Scored]]:
    """``k`` samples per problem (one batched call each, seeds ``seed + 1000 * i``), graded and step-checked."""
    return _sample(ckpt, [p.question for p in problems], [p.answer for p in problems], k, temperature,
                   seeds=[seed + 1000 * i for i in range(len(problems))], max_tokens=max_tokens)[0]


def eval_greedy(ckpt: Any, problems: list[Any], max_tokens: int = 160) -> float:
    """Greedy accuracy on ``problems``."""
    from thinktwice.organism.generate import generate
    from thinktwice.organism.train import prompt_ids

    tok = ckpt.tokenizer
    right = 0
    for p in problems:
        g = generate(ckpt.model, tok, prompt_ids(tok, p.question), 1, max_tokens=max_tokens, stats=False)[0]
        a = _answer(g.text)
        right += a is not None and a.strip() == str(p.answer)
    return right / len(problems)


def _select(groups: list[list[Scored]], threshold: float, cap: int) -> list[tuple[int, Scored]]:
    """(problem index, sample) of the distinct selected samples, at most ``cap`` per problem."""
    kept = []
    for i, g in enumerate(groups):
        seen: set[str] = set()
        for s in g:
            key = path_key(s.text)
            if s.score() >= threshold and key not in seen and len(seen) < cap:
                seen.add(key)
                kept.append((i, s))
    return kept


def _adapt(cfg: StarConfig, ckpt: Any, problems: list[Any], it: int
           ) -> tuple[float, float, list[dict[str, Any]], Usage]:
    sub = problems[: cfg.adapt_problems]
    grid, usage = [], Usage()
    for t in cfg.temperatures:
        groups, u = _sample(ckpt, [p.question for p in sub], [p.answer for p in sub], cfg.k, t,
                            seeds=[cfg.seed + 7919 * it + 1000 * i for i in range(len(sub))],
                            max_tokens=cfg.max_tokens)
        usage += u
        for th in [x for x in cfg.thresholds if x >= cfg.threshold] or [cfg.threshold]:  # never below the filter
            st = measure(groups, threshold=th, temperature=t)
            grid.append({"temperature": t, "threshold": th, "balance": st.balance})
    best = max(grid, key=lambda r: (r["balance"], -abs(r["temperature"] - cfg.temperature)))
    return best["temperature"], best["threshold"], grid, usage


def _rationalize(cfg: StarConfig, ckpt: Any, problems: list[Any], failed: list[int], temperature: float,
                 threshold: float, it: int) -> tuple[list[tuple[int, Scored]], Usage]:
    """STaR's rationalization of the ``failed`` problems: ``k`` samples of the hinted question each,
    selected like the plain samples; returns (problem index, sample) pairs and the Usage of every call."""
    hint = _HINT.split("{")[0].strip()
    groups, usage = _sample(ckpt, [hinted_question(problems[i].question, problems[i].answer) for i in failed],
                            [problems[i].answer for i in failed], cfg.k, temperature,
                            seeds=[cfg.seed + 15485863 * it + 1000 * i for i in failed], max_tokens=cfg.max_tokens)
    # a rationale that repeats the hint would teach the model to expect it: drop it
    groups = [[s for s in g if hint not in s.text] for g in groups]
    return [(failed[j], s) for j, s in _select(groups, threshold, cfg.max_per_problem)], usage


def _stream_pairs(cfg: StarConfig, n: int, it: int, avoid: set[str]) -> list[tuple[str, str]]:
    """``n`` fresh gold train problems (seeded per iteration, none of ``avoid``), one random order each."""
    import random

    from thinktwice.organism import arith

    rng = random.Random(f"stream/{cfg.seed}/{it}")
    fresh = _problems(cfg, "train", n, seed=cfg.seed + 1000 + it, avoid=avoid)
    return [(p.question, p.solution(rng.choice(arith.ORDERS))) for p in fresh]


def _gold_pairs(problems: list[Any], how: str = "random", seed: int = 0) -> list[tuple[str, str]]:
    """Gold (question, solution) pairs: one solution in a seeded random order per problem (as the base
    was trained), the story order, or every distinct order."""
    import random

    from thinktwice.organism import arith

    rng = random.Random(f"gold/{seed}")
    out = []
    for p in problems:
        if how == "all":
            out += [(p.question, sol) for sol in dict.fromkeys(p.solution(o) for o in arith.ORDERS)]
        else:
            out.append((p.question, p.solution("story" if how == "story" else rng.choice(arith.ORDERS))))
    return out


def _numerics() -> dict[str, Any]:
    """What fixes the floating-point results of a run besides the seed: a seed repeats its figures
    to the digit only with the same torch build, kernel ISA, thread count and deterministic algorithms."""
    import platform

    import torch

    return {"torch": str(torch.__version__), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), "deterministic": torch.are_deterministic_algorithms_enabled(),
            "machine": platform.machine(), "cpu": _cpu_model()}


def _cpu_model() -> str:
    """The CPU's vendor and model name (MKL and torch pick their kernels by it), as far as it can be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            info = dict(ln.split(":", 1) for ln in f.read(20_000).splitlines() if ":" in ln)
        names = {k.strip(): v.strip() for k, v in info.items()}
        return " ".join(x for x in (names.get("vendor_id"), names.get("model name")) if x) or "unknown"
    except OSError:
        import platform

        return platform.processor() or "unknown"


def run_star(cfg: StarConfig, checkpoint: str | Path | None = None, out: str | Path | None = None, *,
             on_iteration: Callable[[dict[str, Any]], None] | None = None) -> StarResult:
    """Run ``cfg.iterations`` STaR iterations from ``checkpoint`` (None = the shipped ``small``);
    with ``out``, write each iteration's checkpoint, its SFT data (with provenance) and ``star.json``.

    Deterministic for a seed on one machine: one torch thread (kept afterwards: it is also the fast
    setting on a busy machine), deterministic algorithms (restored afterwards), seeded problems,
    samples and data order. Other CPUs can run other kernels (``numerics`` in the result says which).
    """
    import torch

    torch.set_num_threads(1)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        return _run(cfg, checkpoint, out, on_iteration)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)


def _run(cfg: StarConfig, checkpoint: str | Path | None, out: str | Path | None,
         on_iteration: Callable[[dict[str, Any]], None] | None) -> StarResult:
    from thinktwice.organism.checkpoint import load, save
    from thinktwice.organism.train import finetune

    t_all = time.perf_counter()
    base = load(checkpoint)
    base_name = str(checkpoint) if checkpoint is not None else "organism-small (shipped)"
    train_ps = _problems(cfg, "train", cfg.problems)
    test_ps = _problems(cfg, "test", cfg.eval_problems)
    dev_ps = dev_problems(cfg, {p.question for p in train_ps})
    outdir = Path(out) if out is not None else None
    if outdir is not None:
        outdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    base_acc = eval_greedy(base, test_ps, cfg.max_tokens)
    log.info("base greedy accuracy %.3f on %d held-out problems (%.0fs)", base_acc, len(test_ps),
             time.perf_counter() - t0)
    res = StarResult(cfg, base_acc, train_problems=train_ps, dev_problems=dev_ps, numerics=_numerics())
    if dev_ps:
        res.base_dev_accuracy = eval_greedy(base, dev_ps, cfg.max_tokens)
    cur, cur_name = base, base_name
    ctl = base
    for it in range(1, cfg.iterations + 1):
        rec: dict[str, Any] = {"iteration": it, "source_model": cur_name, "restart": cfg.restart}
        usage: dict[str, Usage] = {}
        temp, thr = cfg.temperature, cfg.threshold
        t0 = time.perf_counter()
        if cfg.adapt:
            temp, thr, grid, usage["adapt"] = _adapt(cfg, cur, train_ps, it)
            rec["adapt_grid"] = grid
        seeds = [cfg.seed + 104729 * it + 1000 * i for i in range(len(train_ps))]
        groups, usage["sample"] = _sample(cur, [p.question for p in train_ps], [p.answer for p in train_ps], cfg.k,
                                          temp, seeds=seeds, max_tokens=cfg.max_tokens)
        res.samples[it] = groups
        stats: BStarStats = measure(groups, threshold=thr, temperature=temp)
        kept = _select(groups, thr, cfg.max_per_problem)
        hinted: list[tuple[int, Scored]] = []
        if cfg.rationalize:
            have = {i for i, _ in kept}
            failed = [i for i in range(len(train_ps)) if i not in have]
            hinted, usage["rationalize"] = _rationalize(cfg, cur, train_ps, failed, temp, thr, it)
            rec.update(rationalize_problems=len(failed), rationalized=len(hinted),
                       rationalized_problems=len({i for i, _ in hinted}))
        rec["sample_seconds"] = round(time.perf_counter() - t0, 1)
        rec.update(temperature=temp, threshold=thr, filter="answer+steps" if thr > 1.0 else "answer",
                   kept=len(kept) + len(hinted),
                   kept_with_bad_steps=sum(not s.steps_valid for _, s in kept + hinted),
                   bstar=stats.to_dict(), usage={k: u.to_dict() for k, u in usage.items()})
        if not kept and not hinted:
            log.warning("iteration %d kept no sample; stopping", it)
            res.iterations.append({**rec, "accuracy": res.final_accuracy})
            break
        # rationales are trained on the plain question: the hint never enters a training prompt
        data = [(i, s, False) for i, s in kept] + [(i, s, True) for i, s in hinted]
        pairs = [(train_ps[i].question, s.text) for i, s, _ in data]
        steps = cfg.iteration_steps(it)
        start = base if cfg.restart == "base" else cur
        t0 = time.perf_counter()
        cur, summ = finetune(start, pairs, steps=steps, lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed + it)
        rec.update(steps=steps, train_loss=summ["loss"], train_seconds=round(time.perf_counter() - t0, 1))
        t0 = time.perf_counter()
        rec["accuracy"] = eval_greedy(cur, test_ps, cfg.max_tokens)
        if dev_ps:
            rec["dev_accuracy"] = eval_greedy(cur, dev_ps, cfg.max_tokens)
        rec["eval_seconds"] = round(time.perf_counter() - t0, 1)
        cur_name = f"star-iter{it}"
        if outdir is not None:
            cur.meta["star"] = {k: v for k, v in rec.items() if k != "adapt_grid"}
            rec["checkpoint"] = str(save(cur, outdir / f"iter{it}.pt"))
            meta0 = {"source": "star", "iteration": it, "source_model": rec["source_model"], "temperature": temp,
                     "filter": rec["filter"], "restart": cfg.restart, "split": "train", "loop": cfg.name}
            write_jsonl((sft_record(train_ps[i].question, s.text,
                                    {**meta0, "problem_index": i, "steps_valid": s.steps_valid,
                                     "origin": "rationalization" if h else "sample", "hinted": h})
                         for i, s, h in data), outdir / f"iter{it}.jsonl")
        if cfg.control:
            cstart = base if cfg.restart == "base" else ctl
            t0 = time.perf_counter()
            gold = (_stream_pairs(cfg, 3 * steps * cfg.batch_size, it, {p.question for p in train_ps})
                    if cfg.control_gold == "stream" else _gold_pairs(train_ps, cfg.control_gold, cfg.seed + it))
            ctl, csum = finetune(cstart, gold, steps=steps, lr=cfg.lr, batch_size=cfg.batch_size,
                                 seed=cfg.seed + it)
            cacc = eval_greedy(ctl, test_ps, cfg.max_tokens)
            res.control.append({"iteration": it, "steps": steps, "accuracy": cacc, "train_loss": csum["loss"],
                                "gold": cfg.control_gold, "pairs": len(gold),
                                "seconds": round(time.perf_counter() - t0, 1)})
            rec["control_accuracy"] = cacc
        log.info("iteration %d: accuracy %.3f (base %.3f)%s; pass@%d %.3f exploitation %.3f balance %.3f, kept %d%s",
                 it, rec["accuracy"], base_acc,
                 f", control {rec['control_accuracy']:.3f}" if cfg.control else "", cfg.k, stats.pass_at_k,
                 stats.exploitation, stats.balance, rec["kept"],
                 f" ({len(hinted)} rationalized)" if cfg.rationalize else "")
        res.iterations.append(rec)
        if on_iteration is not None:
            on_iteration(rec)
    res.seconds = time.perf_counter() - t_all
    if outdir is not None:
        import json

        (outdir / "star.json").write_text(json.dumps(res.to_dict(), indent=1))
    return res


def plot_bstar(res: StarResult, path: str | Path) -> Path:
    """The B-STaR curve: held-out accuracy (and the control's), pass@k, exploitation and balance per iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    its = [r["iteration"] for r in res.iterations]
    fig, ax = plt.subplots(figsize=(8.6, 4.2))
    ax.plot([0, *its], [res.base_accuracy, *[r["accuracy"] for r in res.iterations]], "o-",
            label=f"held-out greedy accuracy ({res.config.name})")
    if res.control:
        ax.plot([0, *[c["iteration"] for c in res.control]], [res.base_accuracy, *[c["accuracy"] for c in res.control]],
                "s--", label="held-out greedy accuracy (gold control)")
    for key, lab in (("pass_at_k", f"pass@{res.config.k} (train samples)"), ("exploitation", "exploitation"),
                     ("balance", "balance score (n*=8)"), ("sample_accuracy", "per-sample accuracy")):
        ax.plot(its, [r["bstar"][key] for r in res.iterations], ".:", label=lab)
    ax.set_xlabel("iteration (measures of the samples drawn from the previous model)")
    ax.set_ylim(0, 1.02)
    ax.set_xticks([0, *its])
    ax.set_title(f"{res.config.name} on the organism: B-STaR monitor")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=120)
    plt.close(fig)
    return p
