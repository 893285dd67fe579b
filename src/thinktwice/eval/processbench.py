"""ProcessBench: can a model find the earliest wrong step of a solution? (Zheng et al., arXiv 2412.06559)

Items carry step-segmented solutions and the index of the earliest wrong step (-1 when all steps are
right). Metric (METHODS §8.3): ``acc_err`` = exact match on erroneous items, ``acc_cor`` = share of
correct items judged error-free, F1 = their harmonic mean, with bootstrap CIs over items. Naming
the wrong step counts as wrong even when the solution is flagged. The confusion summary splits
erroneous items into too early / exact / too late / missed and correct items into right /
false alarm; unparseable verdicts count as wrong and are reported separately.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from thinktwice.errors import DataError
from thinktwice.lm.meter import Meter
from thinktwice.signals.step_critic import parse_earliest_error, step_prompt
from thinktwice.types import SamplingParams, Usage

__all__ = ["PBItem", "load_processbench", "PBResult", "pb_metrics", "run_processbench", "trivial_predictions"]


@dataclass(frozen=True, slots=True)
class PBItem:
    id: str
    problem: str
    steps: tuple[str, ...]
    label: int
    generator: str = ""


def load_processbench(
    subset: str, data_dir: str | Path | None = None, limit: int | None = None, *, balanced: bool = True
) -> list[PBItem]:
    """Read ``processbench/<subset>.jsonl`` from the data directory (errors name file:line).

    With ``limit`` and ``balanced`` (the default) the first ``limit // 2`` erroneous and first
    ``limit - limit // 2`` correct items are kept, in file order, so both accuracies are defined
    (the files start with a run of erroneous items).
    """
    from thinktwice.tasks.datadir import ENV_VAR, candidate_dirs, find_file, read_jsonl

    if subset not in ("gsm8k", "math", "olympiadbench", "omnimath"):
        raise DataError(f"unknown ProcessBench subset {subset!r}; valid: gsm8k, math, olympiadbench, omnimath")
    path = find_file(f"processbench/{subset}.jsonl", data_dir)
    if path is None:
        looked = ", ".join(str(d) for d in candidate_dirs(data_dir))
        raise DataError(f"processbench/{subset}.jsonl not found (looked in {looked}); set ${ENV_VAR}")
    items: list[PBItem] = []
    for row in read_jsonl(path, required=("id", "problem", "steps", "label")):
        try:
            items.append(PBItem(str(row["id"]), str(row["problem"]), tuple(str(s) for s in row["steps"]),
                                int(row["label"]), str(row.get("generator", ""))))
        except (TypeError, ValueError) as e:
            raise DataError(f"{path}:{row['__line__']}: bad ProcessBench row ({e})") from None
    if limit is None:
        return items
    if not balanced:
        return items[:limit]
    err_left, cor_left = limit // 2, limit - limit // 2
    keep = []
    for it in items:
        if it.label == -1 and cor_left > 0:
            cor_left -= 1
            keep.append(it)
        elif it.label != -1 and err_left > 0:
            err_left -= 1
            keep.append(it)
    return keep


@dataclass
class PBResult:
    """Per-item predictions (None = unparseable) with the metrics and their 95% CIs."""

    labels: list[int]
    preds: list[int | None]
    metrics: dict[str, float] = field(default_factory=dict)
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    confusion: dict[str, int] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    raw: list[list[str]] = field(default_factory=list)


def _f1(a: float, b: float) -> float:
    return 2 * a * b / (a + b) if (a + b) > 0 else 0.0


def _point(labels: np.ndarray, preds: np.ndarray) -> tuple[float, float, float]:
    err = labels != -1
    acc_err = float((preds[err] == labels[err]).mean()) if err.any() else math.nan
    acc_cor = float((preds[~err] == -1).mean()) if (~err).any() else math.nan
    return acc_err, acc_cor, _f1(acc_err, acc_cor) if not (math.isnan(acc_err) or math.isnan(acc_cor)) else math.nan


def pb_metrics(
    labels: Sequence[int], preds: Sequence[int | None], *, n_boot: int = 1000, seed: int = 0
) -> tuple[dict[str, float], dict[str, tuple[float, float]], dict[str, int]]:
    """ProcessBench accuracy on erroneous / correct items, F1, bootstrap CIs, and the confusion summary."""
    lab = np.asarray(labels, dtype=int)
    pr = np.asarray([-2 if p is None else p for p in preds], dtype=int)  # -2 never matches
    acc_err, acc_cor, f1 = _point(lab, pr)
    metrics = {"acc_err": acc_err, "acc_cor": acc_cor, "f1": f1, "n": float(lab.size),
               "n_err": float((lab != -1).sum()), "n_cor": float((lab == -1).sum())}
    rng = np.random.default_rng(seed)
    boots = np.array([_point(lab[i], pr[i]) for i in rng.integers(0, lab.size, size=(n_boot, lab.size))]) \
        if lab.size else np.zeros((0, 3))
    ci = {}
    for j, k in enumerate(("acc_err", "acc_cor", "f1")):
        col = boots[:, j][~np.isnan(boots[:, j])] if boots.size else np.array([])
        ci[k] = (float(np.quantile(col, 0.025)), float(np.quantile(col, 0.975))) if col.size else (math.nan, math.nan)
    conf: Counter[str] = Counter()
    for lb, p in zip(lab, preds):
        if p is None:
            conf["unparsed"] += 1
        elif lb == -1:
            conf["right (no error)" if p == -1 else "false alarm"] += 1
        elif p == -1:
            conf["missed"] += 1
        elif p < lb:
            conf["too early"] += 1
        elif p == lb:
            conf["exact"] += 1
        else:
            conf["too late"] += 1
    return metrics, ci, dict(conf)


def trivial_predictions(items: Sequence[PBItem], kind: str) -> list[int | None]:
    """Baselines a critic must beat: always 'no error' (-1) or always 'step 0'."""
    if kind == "no-error":
        return [-1] * len(items)
    if kind == "step-0":
        return [0] * len(items)
    raise ValueError(f"unknown trivial baseline {kind!r}")


def _majority(preds: Sequence[int | None]) -> int | None:
    votes = Counter(p for p in preds if p is not None)
    if not votes:
        return None
    top = max(votes.values())
    for p in preds:  # earliest-appearing among the tied
        if p is not None and votes[p] == top:
            return p
    return None


async def run_processbench(
    items: Sequence[PBItem],
    lm: Meter,
    *,
    n: int = 1,
    temperature: float = 0.0,
    max_tokens: int = 768,
    concurrency: int = 8,
    seed: int = 0,
    on_item: Callable[[int, PBItem, list[str], int | None], Any] | None = None,
) -> PBResult:
    """Ask the critic about every item (greedy, or a majority over ``n`` samples) and score it."""
    sem = asyncio.Semaphore(max(1, concurrency))
    preds: list[int | None] = [None] * len(items)
    raw: list[list[str]] = [[] for _ in items]
    temp = temperature if n == 1 else (temperature or 0.7)

    async def one(i: int, item: PBItem) -> None:
        async with sem:
            params = SamplingParams(max_tokens=max_tokens, temperature=temp, seed=seed * 100_003 + i, logprobs=False)
            samples = await lm.sample(step_prompt(item.problem, item.steps), params, n, stage="critic")
            raw[i] = [s.text for s in samples]
            preds[i] = _majority([parse_earliest_error(s.text, len(item.steps)) for s in samples])
            if on_item is not None:
                on_item(i, item, raw[i], preds[i])

    await asyncio.gather(*(one(i, it) for i, it in enumerate(items)))
    labels = [it.label for it in items]
    metrics, ci, conf = pb_metrics(labels, preds, seed=seed)
    return PBResult(labels, preds, metrics, ci, conf, lm.usage, raw)
