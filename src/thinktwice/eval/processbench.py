"""ProcessBench: can a model find the earliest wrong step of a solution? (Zheng et al., arXiv 2412.06559)

Items carry step-segmented solutions and the index of the earliest wrong step (-1 when all steps are
right). Metric (METHODS §8.3): ``acc_err`` = exact match on erroneous items, ``acc_cor`` = share of
correct items judged error-free, F1 = their harmonic mean, with bootstrap CIs over items. Naming
the wrong step counts as wrong even when the solution is flagged. The confusion summary splits
erroneous items into too early / exact / too late / missed and correct items into right /
false alarm; unparseable verdicts count as wrong and are reported separately.

The default prompt is the released one (QwenLM/ProcessBench, ``critique_template.txt``: paragraphs in
``<paragraph_i>`` tags, the earliest error's index or -1 in ``\\boxed{}``), parsed as its
``run_eval.py`` does, so F1 is comparable with the published table; ``prompt="thinktwice"`` is our
numbered-steps prompt with the lenient verdict parser of :mod:`thinktwice.signals.step_critic`.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from thinktwice.errors import ConfigError, DataError
from thinktwice.lm.meter import Meter
from thinktwice.signals.step_critic import PROMPT_VERSION as STEP_CRITIC_VERSION
from thinktwice.signals.step_critic import parse_earliest_error, step_prompt
from thinktwice.types import Prompt, SamplingParams, Usage

__all__ = ["OFFICIAL_TEMPLATE", "PBItem", "PBResult", "PROMPTS", "load_processbench", "official_prompt",
           "parse_official", "pb_metrics", "prompt_version", "run_processbench", "trivial_predictions"]

# The released critique template, verbatim: the prompt is part of the benchmark's protocol, and a
# reworded one gives F1 values that cannot be set beside the published ones.
OFFICIAL_TEMPLATE = (
    "The following is a math problem and a solution (split into paragraphs, enclosed with tags and indexed from 0):"
    "\n\n[Math Problem]\n\n{problem}\n\n[Solution]\n\n{tagged_response}\n\n"
    "Your task is to review and critique the solution paragraph by paragraph. Once you identify an error in a "
    "paragraph, return the index of the paragraph where the earliest error occurs. Otherwise, return the index of "
    "-1 (which typically denotes \"not found\").\n\n"
    "Please put your final answer (i.e., the index) in \\boxed{{}}."
)
PROMPTS = ("official", "thinktwice")
_OFFICIAL_VERSION = "processbench-official-1"
_BOXED = re.compile(r"\\boxed\{([^}]*)\}")  # as run_eval.py: the text up to the first closing brace
_INDEX = re.compile(r"[+-]?\d{1,6}")


def prompt_version(prompt: str) -> str:
    """The version string recorded with a run for ``prompt`` (a :data:`PROMPTS` name)."""
    if prompt not in PROMPTS:
        raise ConfigError(f"unknown ProcessBench prompt {prompt!r}; choose from {', '.join(PROMPTS)}")
    return _OFFICIAL_VERSION if prompt == "official" else STEP_CRITIC_VERSION


def official_prompt(problem: str, steps: Sequence[str]) -> Prompt:
    """The released ProcessBench critic prompt: one user turn, steps tagged ``<paragraph_i>`` from 0."""
    tagged = "".join(f"<paragraph_{i}>\n{s}\n</paragraph_{i}>\n\n" for i, s in enumerate(steps)).strip()
    return Prompt.user(OFFICIAL_TEMPLATE.format(problem=problem, tagged_response=tagged))


def parse_official(text: str, n_steps: int | None = None) -> int | None:
    """The index in the LAST ``\\boxed{...}`` of a reply, as the released evaluation reads it (None when
    there is none or it is not an integer). Indices outside ``-1..n_steps-1`` can never match a label
    and are returned as None too, so they show as unparsed rather than as "too early"/"too late".
    """
    found = _BOXED.findall(text) if isinstance(text, str) else []
    if not found:
        return None
    inner = found[-1].strip()
    if not _INDEX.fullmatch(inner):
        return None
    v = int(inner)
    if v < -1 or (n_steps is not None and v >= n_steps):
        return None
    return v


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
    truncated: int = 0  # replies cut at max_tokens (finish_reason "length"): their verdict is often missing
    prompt: str = "official"


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
    prompt: str = "official",
    n: int = 1,
    temperature: float | None = None,
    top_p: float | None = None,
    max_tokens: int = 768,
    concurrency: int = 8,
    seed: int = 0,
    on_item: Callable[[int, PBItem, list[str], int | None], Any] | None = None,
) -> PBResult:
    """Ask the critic about every item (greedy, or a majority over ``n`` samples) and score it.

    ``prompt``: ``"official"`` (the released template and parser) or ``"thinktwice"``. Voting
    (``n > 1``) samples at the released code's settings for non-Qwen models unless given
    (temperature 1.0, top-p 0.9; our prompt keeps its temperature 0.7). The released runs allow up
    to 8192 tokens per reply; a reply cut at ``max_tokens`` is counted in ``truncated``.
    """
    prompt_version(prompt)  # validates the name
    build, parse = (official_prompt, parse_official) if prompt == "official" else (step_prompt, parse_earliest_error)
    sem = asyncio.Semaphore(max(1, concurrency))
    preds: list[int | None] = [None] * len(items)
    raw: list[list[str]] = [[] for _ in items]
    cut = 0
    if n == 1:
        temp, tp = temperature or 0.0, top_p or 1.0
    elif prompt == "official":
        temp, tp = (1.0 if temperature is None else temperature), (0.9 if top_p is None else top_p)
    else:
        temp, tp = temperature or 0.7, top_p or 1.0

    async def one(i: int, item: PBItem) -> None:
        nonlocal cut
        async with sem:
            params = SamplingParams(max_tokens=max_tokens, temperature=temp, top_p=tp, seed=seed * 100_003 + i,
                                    logprobs=False)
            samples = await lm.sample(build(item.problem, item.steps), params, n, stage="critic")
            raw[i] = [s.text for s in samples]
            cut += sum(s.finish_reason == "length" for s in samples)
            preds[i] = _majority([parse(s.text, len(item.steps)) for s in samples])
            if on_item is not None:
                on_item(i, item, raw[i], preds[i])

    await asyncio.gather(*(one(i, it) for i, it in enumerate(items)))
    labels = [it.label for it in items]
    metrics, ci, conf = pb_metrics(labels, preds, seed=seed)
    return PBResult(labels, preds, metrics, ci, conf, lm.usage, raw, cut, prompt)
