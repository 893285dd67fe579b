"""Critique evaluation: open-loop verdicts (CriticBench-style) and closed-loop corrections (RealCritic-style).

Open loop (Luo et al., arXiv 2310.04815; METHODS §8.1): the critic judges stored samples whose
correctness is known; we report F1 for detecting wrong answers (positive = the sample is wrong),
split into self-critique (the sample came from the critic's own model) and cross-critique.

Closed loop (Tang et al., arXiv 2501.14492; METHODS §8.2): flip analysis of the critique-correct
strategy's rounds (METHODS §1.4: Δ(i→c), Δ(c→i) as fractions of all items) beside a
self-consistency baseline matched to its generated tokens.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from thinktwice.eval.store import StoredDecision, StoredSample
from thinktwice.lm.meter import Meter
from thinktwice.signals.critique import critique_prompt, parse_verdict
from thinktwice.types import SamplingParams, Usage

__all__ = ["OpenLoopResult", "detection_metrics", "judge_samples", "FlipReport", "flip_report", "matched_k"]


def detection_metrics(is_wrong: Sequence[bool], flagged: Sequence[bool | None]) -> dict[str, float]:
    """Precision/recall/F1 of flagging wrong samples, and verdict accuracy; unparsed verdicts count
    as "not flagged" for F1 and as errors for accuracy."""
    tp = sum(1 for w, f in zip(is_wrong, flagged) if w and f is True)
    fp = sum(1 for w, f in zip(is_wrong, flagged) if not w and f is True)
    fn = sum(1 for w, f in zip(is_wrong, flagged) if w and f is not True)
    right = sum(1 for w, f in zip(is_wrong, flagged) if f is not None and f == w)
    n = len(is_wrong)
    prec = tp / (tp + fp) if tp + fp else math.nan
    rec = tp / (tp + fn) if tp + fn else math.nan
    if tp + fn == 0:
        f1 = math.nan  # no wrong samples: detection is undefined
    elif tp == 0:
        f1 = 0.0
    else:
        f1 = 2 * prec * rec / (prec + rec)
    return {"n": float(n), "wrong": float(sum(is_wrong)), "precision": prec, "recall": rec, "f1": f1,
            "accuracy": right / n if n else math.nan,
            "unparsed": float(sum(f is None for f in flagged))}


@dataclass
class OpenLoopResult:
    rows: list[tuple[StoredSample, bool | None, bool]]  # (sample, flagged wrong, same model as critic)
    usage: Usage

    def split(self, which: str) -> dict[str, float]:
        sel = [r for r in self.rows if which == "all" or (r[2] if which == "self" else not r[2])]
        return detection_metrics([not bool(r[0].correct) for r in sel], [r[1] for r in sel])


def pick_balanced(samples: Sequence[StoredSample], per_problem: int, seed: int = 0) -> list[StoredSample]:
    """Up to ``per_problem`` samples per problem, alternating right and wrong where both exist."""
    rng = np.random.default_rng(seed)
    by_pid: dict[str, list[StoredSample]] = {}
    for s in samples:
        if s.correct is not None:
            by_pid.setdefault(s.problem_id, []).append(s)
    out: list[StoredSample] = []
    for pid, group in by_pid.items():
        right = [s for s in group if s.correct]
        wrong = [s for s in group if not s.correct]
        rng.shuffle(right)  # type: ignore[arg-type]
        rng.shuffle(wrong)  # type: ignore[arg-type]
        merged = [x for pair in zip(wrong, right) for x in pair] + wrong[len(right):] + right[len(wrong):]
        out.extend(merged[:per_problem])
    return out


async def judge_samples(
    questions: dict[str, str], samples: Sequence[StoredSample], lm: Meter, *, critic_model: str,
    max_tokens: int = 512, concurrency: int = 8,
) -> OpenLoopResult:
    """Ask the critic whether each sample is correct (greedy, one call each)."""
    sem = asyncio.Semaphore(max(1, concurrency))
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, logprobs=False)

    async def one(s: StoredSample) -> tuple[StoredSample, bool | None, bool]:
        async with sem:
            (reply,) = await lm.sample(critique_prompt(questions[s.problem_id], s.sample.text), params, 1,
                                       stage="critic")
        verdict = parse_verdict(reply.text)
        return s, (None if verdict is None else not verdict), s.sample.model == critic_model

    rows = list(await asyncio.gather(*(one(s) for s in samples)))
    return OpenLoopResult(rows, lm.usage)


@dataclass
class FlipReport:
    """Correctness per round (round 0 = the initial solution) and the flips between rounds."""

    n: int
    accuracy: list[float] = field(default_factory=list)
    i_to_c: list[float] = field(default_factory=list)
    c_to_i: list[float] = field(default_factory=list)
    unchanged: list[float] = field(default_factory=list)


def flip_report(decisions: Sequence[StoredDecision]) -> FlipReport:
    """Read per-round correctness from critique-correct traces; flips are fractions of ALL items."""
    per: list[list[tuple[bool, str | None]]] = []
    for d in decisions:
        rounds = [(bool(t.get("correct")), t.get("answer")) for t in d.trace if t.get("kind") == "round"]
        if rounds:
            per.append(rounds)
    rep = FlipReport(n=len(per))
    if not per:
        return rep
    depth = min(len(r) for r in per)
    for k in range(depth):
        rep.accuracy.append(sum(r[k][0] for r in per) / len(per))
        if k:
            rep.i_to_c.append(sum((not r[k - 1][0]) and r[k][0] for r in per) / len(per))
            rep.c_to_i.append(sum(r[k - 1][0] and not r[k][0] for r in per) / len(per))
            rep.unchanged.append(sum(r[k - 1][1] == r[k][1] for r in per) / len(per))
    return rep


def matched_k(generated_tokens: float, tokens_per_sample: float) -> int:
    """Samples of self-consistency that spend about ``generated_tokens`` (at least 1)."""
    if tokens_per_sample <= 0 or math.isnan(tokens_per_sample):
        return 1
    return max(1, round(generated_tokens / tokens_per_sample))
