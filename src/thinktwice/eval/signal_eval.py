"""Score a stored sample pool with self-evaluation signals and measure how well each separates right
answers from wrong ones (the library side of ``thinktwice calibrate``).

A pool is a run's stored samples grouped by problem: the candidates of a problem are its samples,
their labels the stored ``correct`` flags. Token signals are scored from the stored token
statistics (each candidate's tokens converted once for all of them); agreement signals from the
answers; signals that call the model need a live ``lm``. Scores of model-calling signals are
written to the store and re-used on the next call unless ``rescore`` is set. Reports of entropy /
self-certainty read from top-k renormalised tokens are marked approximate.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from thinktwice.errors import CapabilityError, ConfigError, UnknownNameError
from thinktwice.eval.calibration import DEFAULT_BINS, SignalReport, signal_report
from thinktwice.eval.store import RunStore
from thinktwice.lm.meter import Meter
from thinktwice.registry import signals as signal_registry
from thinktwice.signals.base import check_requires
from thinktwice.signals.confidence import TokenSignal, approximate_signals, score_token_signals
from thinktwice.tasks.base import Query
from thinktwice.types import Candidate, Capabilities, Problem, Prompt, SamplingParams

__all__ = [
    "ExactAnswers",
    "ProblemPool",
    "draw_pool",
    "load_pools",
    "needs_model",
    "report_pools",
    "resolve_signals",
    "score_pools",
]

log = logging.getLogger(__name__)

Skip = Callable[[str, str], None]
"""Called as ``on_skip(signal_name, reason)`` for a signal left out of an ``all`` request."""


class ExactAnswers:
    """Fallback answer format when the run's task cannot be rebuilt: answers equal as trimmed text."""

    def extract(self, text: str) -> str | None:
        nums = re.findall(r"-?\d[\d,]*(?:\.\d+)?", text)
        return nums[-1] if nums else None

    def canonical(self, answer: str) -> str:
        return answer.strip()

    def equivalent(self, a: str, b: str) -> bool:
        return a.strip() == b.strip()


@dataclass(frozen=True)
class ProblemPool:
    """One problem's candidates (its stored samples) with their correctness and store indices."""

    query: Query
    candidates: tuple[Candidate, ...]
    labels: tuple[bool, ...]
    indices: tuple[int, ...]

    @property
    def problem_id(self) -> str:
        return self.query.problem.id


def _task_for(name: str | None) -> Any:
    from thinktwice.registry import tasks

    if not name:
        return None
    try:
        return tasks.create(name)
    except Exception as e:  # noqa: BLE001 - any failure to rebuild the task falls back to plain answers
        log.warning("cannot rebuild task %r (%s); grouping answers as exact text", name, e)
        return None


def load_pools(store: RunStore, run_id: int, *, stage: str | None = "sample", task: Any = None) -> list[ProblemPool]:
    """The run's samples grouped by problem (``stage=None`` keeps every stage). Samples without a
    correctness label are left out."""
    info = store.get_run(run_id)
    task = task if task is not None else _task_for(info.task)
    problems = {p.id: p for p in store.problems(run_id)}
    grouped: dict[str, list[Any]] = {}
    for s in store.samples(run_id):
        if (stage is None or s.stage == stage) and s.correct is not None:
            grouped.setdefault(s.problem_id, []).append(s)
    pools = []
    for pid, rows in grouped.items():
        problem = problems.get(pid) or Problem(pid, "")
        if task is not None:
            try:
                query = Query.from_task(task, problem)
            except Exception as e:  # noqa: BLE001 - a prompt that cannot be rebuilt is not fatal here
                log.debug("prompt of %s not rebuilt: %s", pid, e)
                query = Query(problem, Prompt.user(problem.question), task)
        else:
            query = Query(problem, Prompt.user(problem.question), ExactAnswers())
        pools.append(ProblemPool(
            query, tuple(Candidate(r.sample, r.answer, stage=r.stage) for r in rows),
            tuple(bool(r.correct) for r in rows), tuple(r.index for r in rows),
        ))
    if not pools:
        raise ConfigError(f"run {run_id} has no graded samples" + (f" of stage {stage!r}" if stage else ""))
    return pools


def needs_model(signal: Any) -> bool:
    """Whether ``signal`` calls the model: its ``needs_model`` attribute; True when it declares none."""
    return bool(getattr(signal, "needs_model", True))


def resolve_signals(
    spec: str | Sequence[str], *, has_model: bool, on_skip: Skip | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None, capabilities: Capabilities | None = None,
    backend_name: str = "backend",
) -> list[Any]:
    """Build the signals named in ``spec`` (comma-separated names or ``all``), each with its
    ``options[name]``; ``name:ARG`` passes ``path=ARG`` (e.g. ``probe:probe.npz``).

    With ``all``, signals that call the model are skipped (reported to ``on_skip``) when there is
    no model, and so are signals that cannot be built without options (e.g. ``reward-model``
    needs a url); a named signal that needs a model or is misconfigured raises ConfigError. With
    ``capabilities`` (a live backend's), a signal whose ``requires`` it lacks raises
    CapabilityError (``all``: skipped).
    """
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not names:
        raise ConfigError("no signals given; name some (e.g. --signals self-certainty,p-true) or 'all'")
    everything = names == ["all"]
    if everything:
        names = signal_registry.names()
    out = []
    for n in names:
        base, colon, arg = n.partition(":")  # "name:ARG" passes ARG as path= (e.g. probe:probe.npz)
        opts = dict((options or {}).get(base, {}))
        if colon:
            opts["path"] = arg
        try:
            sig = signal_registry.create(base, **opts)
        except ConfigError as e:
            if everything and not isinstance(e, UnknownNameError):
                if on_skip is not None:
                    on_skip(n, str(e))
                continue
            raise
        if needs_model(sig) and not has_model:
            if everything:
                if on_skip is not None:
                    why = ("calls the model" if hasattr(sig, "needs_model")
                           else "declares no needs_model, so it is taken to call the model")
                    on_skip(n, f"{why}; pass --backend to include it")
                continue
            raise ConfigError(f"signal {n!r} calls the model; pass --backend to score a stored run with it")
        if capabilities is not None:
            try:
                check_requires(sig, capabilities, backend_name)
                width = int(getattr(sig, "min_top_logprobs", 0))
                if capabilities.top_logprobs < width:
                    raise CapabilityError(
                        f"signal {n!r} needs top_logprobs >= {width}; backend {backend_name!r} returns "
                        f"{capabilities.top_logprobs} per token. Pick another signal or backend."
                    )
            except CapabilityError as e:
                if not everything:
                    raise
                if on_skip is not None:
                    on_skip(n, str(e))
                continue
        out.append(sig)
    return out


async def score_pools(
    pools: Sequence[ProblemPool],
    signals: Sequence[Any],
    lm: Meter | None = None,
    *,
    skip_missing: bool = False,
    on_skip: Skip | None = None,
    concurrency: int = 8,
    store: RunStore | None = None,
    run_id: int | None = None,
    rescore: bool = False,
) -> dict[str, np.ndarray]:
    """Scores of every candidate, flattened in pool order: ``signal name -> (n_candidates,)``.

    A signal whose inputs are missing raises CapabilityError, or with ``skip_missing`` is reported
    to ``on_skip`` and left out. Per-candidate NaN means the signal gave no score.
    """
    token_sigs = [s for s in signals if isinstance(s, TokenSignal)]
    other = [s for s in signals if not isinstance(s, TokenSignal)]
    out: dict[str, np.ndarray] = {}
    dropped: set[str] = set()

    def missing(sig: Any, e: ConfigError) -> None:
        if not skip_missing:
            raise e
        if sig.name not in dropped:
            dropped.add(sig.name)
            if on_skip is not None:
                on_skip(sig.name, str(e))

    if token_sigs:
        parts: dict[str, list[np.ndarray]] = {s.name: [] for s in token_sigs}
        for pool in pools:
            live = [s for s in token_sigs if s.name not in dropped]
            table = score_token_signals(pool.candidates, live, on_missing=missing)
            for s in live:
                if s.name in table and s.name not in dropped:
                    parts[s.name].append(table[s.name])
        for s in token_sigs:
            if s.name not in dropped:
                out[s.name] = np.concatenate(parts[s.name]) if parts[s.name] else np.empty(0)

    cached = store.scores(run_id) if (store is not None and run_id is not None and not rescore) else {}
    sem = asyncio.Semaphore(max(1, concurrency))

    async def one(sig: Any, pool: ProblemPool) -> list[float]:
        if needs_model(sig):
            hit = [cached.get((pool.problem_id, i), {}).get(sig.name) for i in pool.indices]
            if all(v is not None for v in hit):
                return [float(v) for v in hit]  # type: ignore[arg-type]
        async with sem:
            vals = [float(v) for v in await sig.score(pool.query, pool.candidates, lm)]
        if needs_model(sig) and store is not None and run_id is not None:
            store.put_scores(run_id, pool.problem_id, sig.name, dict(zip(pool.indices, vals)))
        return vals

    for sig in other:
        try:
            vals = await asyncio.gather(*(one(sig, p) for p in pools))
        except ConfigError as e:  # missing capability, or inputs the signal cannot use (code-exec off code)
            missing(sig, e)
            continue
        out[sig.name] = np.asarray([v for vs in vals for v in vs], dtype=np.float64)
    return out


def report_pools(
    pools: Sequence[ProblemPool], scores: dict[str, np.ndarray], *, n_bins: int = DEFAULT_BINS,
    coverages: Sequence[float] = (0.5, 0.8, 1.0), n_boot: int = 1000, seed: int = 0,
    approx: Collection[str] | None = None,
) -> list[SignalReport]:
    """One :class:`SignalReport` per scored signal, pooled over all candidates, bootstrapping problems.

    ``approx`` names the signals whose scores came from approximate statistics; by default the
    full-vocabulary signals when some candidate's tokens are flagged ``approx`` (top-k renormalised).
    """
    labels = np.array([y for p in pools for y in p.labels], dtype=bool)
    groups = np.array([p.problem_id for p in pools for _ in p.labels])
    if approx is None:
        approx = approximate_signals([c for p in pools for c in p.candidates], list(scores))
    return [signal_report(name, s, labels, groups, n_bins=n_bins, coverages=coverages, n_boot=n_boot,
                          seed=seed, approx=name in approx)
            for name, s in scores.items()]


async def draw_pool(
    task: Any, backend: Any, problems: Sequence[Problem], store: RunStore, *, n: int = 8, seed: int = 0,
    concurrency: int = 8, top_logprobs: int = 20, config: dict[str, Any] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> int:
    """Draw ``n`` samples per problem with per-token statistics (top-k up to ``top_logprobs``, capped
    by the backend), grade them, and store them as a new run of kind ``pool``; returns its id."""
    from thinktwice.eval.runner import problem_seed

    caps = backend.capabilities
    k = min(top_logprobs, caps.top_logprobs) if caps.logprobs else 0
    run_id = store.create_run(kind="pool", config={**(config or {}), "n": n, "top_logprobs": k},
                              task=getattr(task, "name", None), task_version=getattr(task, "version", None),
                              backend=getattr(backend, "name", None), model=getattr(backend, "model", None),
                              strategy="sample", seed=seed)
    store.put_problems(run_id, problems)
    meter = Meter(backend)
    sem = asyncio.Semaphore(max(1, concurrency))
    done = [0]

    async def one(problem: Problem) -> None:
        q = Query.from_task(task, problem)
        params: SamplingParams = q.params.replace(logprobs=caps.logprobs, top_logprobs=k,
                                                  seed=problem_seed(seed, problem.id))
        async with sem:
            samples = await meter.sample(q.prompt, params, n)
        answers = [task.extract(s.text) for s in samples]
        correct = [task.grade(a, problem) if a is not None else False for a in answers]
        store.put_samples(run_id, problem.id, samples, answers=answers, correct=correct)
        done[0] += 1
        if on_progress is not None:
            on_progress(done[0], len(problems))

    try:
        await asyncio.gather(*(one(p) for p in problems))
    except BaseException:
        store.set_status(run_id, "failed")
        raise
    store.set_status(run_id, "done")
    return run_id
