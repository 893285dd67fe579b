"""Training data from stored runs: SFT rationales, preference pairs and critique traces.

- **sft** (STaR, arXiv 2203.14465; RFT, arXiv 2308.01825): correct stored solutions, identical
  reasoning paths merged (:func:`~thinktwice.train.bstar.path_key`: the equation sequence, else the
  whitespace-normalised text), at most ``max_per_problem`` per problem; optional arithmetic step check
  (final-answer filtering lets wrong reasoning through). :mod:`thinktwice.train.rationalize` adds, for
  problems with no correct sample, rationales sampled with the gold answer as a hint and stored
  WITHOUT the hint.
- **dpo**: correct vs incorrect samples of the same prompt (capped per problem); self-correction pairs
  from refinement / critique flips (SCL, arXiv 2410.04055: i→c revised ≻ initial, c→i initial ≻
  revised); step-level pairs from tree-search paths (at each branching point, the continuation of the
  highest-valued path ≻ that of the lowest-valued one; MCTS-DPO style, METHODS §9.1).
- **critique**: a wrong first solution, then a critique that led to a correct revision (critique-correct
  rounds, or self-refine feedback + revision).

Every record carries ``meta`` provenance. Harvesting a run over a ``test`` split is refused unless
``allow_test`` (training on a test set's problems would contaminate that test).
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from thinktwice.errors import ConfigError
from thinktwice.train.bstar import arith_steps_valid, path_key
from thinktwice.train.formats import critique_record, dpo_record, sft_record

__all__ = ["FORMATS", "HarvestConfig", "harvest", "prompt_text", "run_split"]

log = logging.getLogger(__name__)
FORMATS = ("sft", "dpo", "critique")


@dataclass(frozen=True)
class HarvestConfig:
    format: str = "sft"
    conversational: bool = False
    dedup: bool = True
    max_per_problem: int = 4  # SFT rationales kept per problem
    pairs_per_problem: int = 2  # correct-vs-incorrect pairs per problem
    pair_sources: tuple[str, ...] = ("samples", "flips", "steps")
    verify_steps: bool = False  # SFT: keep only arithmetic chains whose every equation is right
    allow_test: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"unknown harvest format {self.format!r}; choose from {', '.join(FORMATS)}")
        if self.max_per_problem < 1 or self.pairs_per_problem < 1:
            raise ConfigError("max_per_problem and pairs_per_problem must be >= 1")
        bad = set(self.pair_sources) - {"samples", "flips", "steps"}
        if bad:
            raise ConfigError(f"unknown pair sources {sorted(bad)}; use samples, flips, steps")


def _find(d: Any, key: str) -> Any:
    if isinstance(d, dict):
        if key in d:
            return d[key]
        for v in d.values():
            got = _find(v, key)
            if got is not None:
                return got
    return None


def run_split(store: Any, run_id: int) -> str | None:
    """The data split a run was evaluated on (its config, else its problems' ``meta.split``)."""
    split = _find(store.get_run(run_id).config, "split")
    if split is None:
        splits = {p.meta.get("split") for p in store.problems(run_id)} - {None}
        split = next(iter(splits)) if len(splits) == 1 else None
    return split


def _task(run: Any) -> Any:
    if not run.task:
        return None
    from thinktwice.registry import tasks

    try:
        return tasks.create(run.task, **(_find(run.config, "task_options") or {}))
    except (ConfigError, TypeError, ImportError) as e:  # cannot be rebuilt here: use the bare question
        log.warning("cannot rebuild task %r (%s); prompts are the bare questions", run.task, e)
        return None


def run_temperature(run: Any) -> float | None:
    """The sampling temperature of a run: its config, else its strategy's default."""
    t = _find(run.config, "temperature")
    if t is not None or not run.strategy:
        return t
    from thinktwice.strategies import create_strategy

    try:
        strat = create_strategy(run.strategy, **(_find(run.config, "strategy_options") or {}))
    except (ConfigError, TypeError, KeyError):
        return None
    return getattr(strat, "temperature", None)


def prompt_text(task: Any, problem: Any) -> str:
    """The text shown to the model for ``problem``: the raw prompt or the last user message."""
    if task is None:
        return problem.question
    p = task.prompt(problem)
    if p.raw is not None:
        return p.raw
    users = [m.content for m in p.messages if m.role == "user"]
    return users[-1] if users else problem.question


def _check_split(store: Any, run_id: int, cfg: HarvestConfig) -> str | None:
    split = run_split(store, run_id)
    if split == "test":
        if not cfg.allow_test:
            raise ConfigError(f"run {run_id} was evaluated on the test split: harvesting it would train on that test "
                              "set (pass --allow-test to do it anyway, and never report that test afterwards)")
        log.warning("harvesting run %d on its TEST split (--allow-test): do not evaluate on it afterwards", run_id)
    return split


def _is_solution(stage: str) -> bool:
    return not stage.startswith(("critique", "feedback"))


def harvest(store: Any, run_id: int, cfg: HarvestConfig) -> list[dict[str, Any]]:
    """Records of ``cfg.format`` from run ``run_id`` of ``store`` (a :class:`~thinktwice.eval.store.RunStore`)."""
    run = store.get_run(run_id)
    split = _check_split(store, run_id, cfg)
    task = _task(run)
    problems = {p.id: p for p in store.problems(run_id)}
    by_problem: dict[str, list[Any]] = defaultdict(list)
    for s in store.samples(run_id, with_tokens=False):
        by_problem[s.problem_id].append(s)
    decisions = {d.problem_id: d for d in store.decisions(run_id)}
    temperature = run_temperature(run)
    base_meta = {"run": run_id, "source_model": run.model, "strategy": run.strategy, "task": run.task,
                 "temperature": temperature, "split": split}
    rng = random.Random(f"harvest/{cfg.seed}")
    scores: dict[Any, dict[str, float]] | None = None
    out: list[dict[str, Any]] = []
    for pid, samples in by_problem.items():
        prob = problems.get(pid)
        if prob is None:
            continue
        prompt = prompt_text(task, prob)
        meta = {**base_meta, "problem_id": pid}
        if cfg.format == "sft":
            out += _sft(prompt, samples, meta, cfg)
        elif cfg.format == "dpo":
            if scores is None and "steps" in cfg.pair_sources and any(s.stage == "path" for s in samples):
                scores = store.scores(run_id)  # read once, only for runs with search paths
            out += _pairs(prompt, samples, scores or {}, meta, cfg, rng)
        else:
            out += _critiques(prob.question, samples, decisions.get(pid), meta)
    log.info("harvested %d %s records from run %d", len(out), cfg.format, run_id)
    return out


def _sft(prompt: str, samples: Sequence[Any], meta: dict[str, Any], cfg: HarvestConfig) -> list[dict[str, Any]]:
    out, seen = [], set()
    for s in samples:
        if s.correct is not True or not _is_solution(s.stage):
            continue
        if cfg.verify_steps and not arith_steps_valid(s.sample.text):
            continue
        key = path_key(s.sample.text)
        if cfg.dedup and key in seen:
            continue
        seen.add(key)
        out.append(sft_record(prompt, s.sample.text.strip(), {**meta, "source": "sample", "samples": [s.index],
                                                              "stage": s.stage, "filter": "answer+steps"
                                                              if cfg.verify_steps else "answer"},
                              conversational=cfg.conversational))
        if len(out) >= cfg.max_per_problem:
            break
    return out


def _pairs(prompt: str, samples: Sequence[Any], scores: dict[Any, dict[str, float]],
           meta: dict[str, Any], cfg: HarvestConfig, rng: random.Random) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    sols = [s for s in samples if _is_solution(s.stage)]
    if "samples" in cfg.pair_sources:
        good = list({path_key(s.sample.text): s for s in sols if s.correct is True}.values())
        bad = list({path_key(s.sample.text): s for s in sols if s.correct is False}.values())
        rng.shuffle(good)
        rng.shuffle(bad)
        for g, b in list(zip(good, bad))[: cfg.pairs_per_problem]:
            out.append(dpo_record(prompt, g.sample.text.strip(), b.sample.text.strip(),
                                  {**meta, "source": "correct-vs-incorrect", "samples": [g.index, b.index]}))
    if "flips" in cfg.pair_sources:
        revs = [s for s in samples if s.stage.startswith(("refine-", "critique-"))]
        first = next((s for s in samples if not s.stage.startswith(("refine-", "critique-"))), None)
        if first is not None and revs and first.correct is not None:
            final = revs[-1]
            if final.correct is not None and final.correct != first.correct:
                kind = "i->c" if final.correct else "c->i"
                chosen, rejected = (final, first) if final.correct else (first, final)
                if path_key(chosen.sample.text) != path_key(rejected.sample.text):
                    out.append(dpo_record(prompt, _solution_part(chosen), _solution_part(rejected),
                                          {**meta, "source": f"self-correction {kind}",
                                           "samples": [chosen.index, rejected.index]}))
    if "steps" in cfg.pair_sources:
        out += _step_pairs(prompt, samples, scores, meta)
    return out


def _solution_part(s: Any) -> str:
    """A critique-round text's corrected solution (the text after 'Corrected solution:'), else the text."""
    import re

    text = s.sample.text
    if s.stage.startswith("critique"):
        parts = re.split(r"corrected\s+solution\s*:?", text, flags=re.IGNORECASE)
        if len(parts) > 1:
            return parts[-1].strip()
    return text.strip()


def _steps(text: str) -> list[str]:
    return [ln for ln in text.strip().split("\n") if ln.strip()]


def _step_pairs(prompt: str, samples: Sequence[Any], scores: dict[Any, dict[str, float]], meta: dict[str, Any]
                ) -> list[dict[str, Any]]:
    """At each point where stored search paths branch, the next step of the best-valued path ≻ the worst's."""
    paths = []
    for s in samples:
        if s.stage != "path":
            continue
        sc = scores.get((s.problem_id, s.index), {})
        vals = [v for k, v in sc.items() if k != "q"] or list(sc.values())
        if vals:
            paths.append((vals[0], s))
    out: list[dict[str, Any]] = []
    groups: dict[tuple[str, ...], list[tuple[float, Any, str]]] = defaultdict(list)
    for v, s in paths:
        st = _steps(s.sample.text)
        for d in range(len(st)):
            groups[tuple(st[:d])].append((v, s, st[d]))
    for prefix, kids in groups.items():
        nexts = {k[2] for k in kids}
        if len(nexts) < 2:
            continue
        best = max(kids, key=lambda k: k[0])
        worst = min(kids, key=lambda k: k[0])
        if best[0] == worst[0] or best[2] == worst[2]:
            continue
        p = prompt.rstrip("\n") + "\n" + "".join(x + "\n" for x in prefix)
        out.append(dpo_record(p, best[2], worst[2], {**meta, "source": "tree-search step", "depth": len(prefix),
                                                     "samples": [best[1].index, worst[1].index],
                                                     "values": [best[0], worst[0]]}))
    return out


def _critiques(question: str, samples: Sequence[Any], decision: Any, meta: dict[str, Any]) -> list[dict[str, Any]]:
    first = next((s for s in samples if not s.stage.startswith(("refine-", "critique-"))), None)
    if first is None or first.correct is not False:
        return []
    fixed = next((s for s in samples if s.stage.startswith(("refine-", "critique-")) and s.correct is True), None)
    if fixed is None:
        return []
    m = {**meta, "source": f"{first.stage}->{fixed.stage}", "samples": [first.index, fixed.index]}
    if fixed.stage.startswith("critique"):
        return [critique_record(question, first.sample.text, fixed.sample.text, "", m)]
    feedback = ""
    if decision is not None:  # self-refine: the feedback of the round before the fixing revision
        rnd = int(fixed.stage.split("-", 1)[1])
        feedback = next((t.get("text", "") for t in decision.trace if t.get("kind") == "feedback"
                         and t.get("round") == rnd), "")
    if not feedback:
        return []
    return [critique_record(question, first.sample.text, feedback, fixed.sample.text, m)]
