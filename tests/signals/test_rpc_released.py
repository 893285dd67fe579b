"""The ``rpc`` signal and core reproduce the released RPC code's prune masks and answer scores.

``test_rpc_released_pools.json`` was recorded by running ``wpc_evaluator`` from the authors' code
(WNJXYK/RPC ``compute_rpc.py``, commit ec0d75a; not part of this repository) on 139 seeded random
pools of 3-128 paths (uniform, two-cluster, narrow, wide and outlier logprobs; some with repeated
completions). Each pool's mask came from a run with every path its own answer (a pruned path's
answer then scores 0), its answer scores from a run with the recorded answers. To re-record: put
``compute_rpc.py``, ``compute_perp.py`` and ``compute_sc.py`` in a scratch directory with empty
stand-ins for the modules they import but do not use for this (metrics, fraction, tqdm,
data_processing.answer_extraction, eval.eval_script) and call ``wpc_evaluator`` with exact string
equality as both comparison functions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from thinktwice.signals.consistency import RPC, rpc_scores
from thinktwice.signals.rpc import path_probs, reasoning_pruning
from thinktwice.strategies.voting import group_answers
from thinktwice.tasks.base import Query
from thinktwice.types import Candidate, Problem, Prompt, Sample, TokenStat

POOLS = json.loads(Path(__file__).with_name("test_rpc_released_pools.json").read_text())["pools"]
FITTED = [p for p in POOLS if p["kind"] != "degenerate"]
DEGENERATE = [p for p in POOLS if p["kind"] == "degenerate"]


class Exact:
    def extract(self, text: str) -> str | None:
        return text.split("=")[-1]

    def canonical(self, a: str) -> str:
        return a

    def equivalent(self, a: str, b: str) -> bool:
        return a == b


def candidates(pool: dict) -> list[Candidate]:
    # one token per path, so the mean logprob is exactly the recorded one
    return [Candidate(Sample(f"t{t}={a}", tokens=(TokenStat("x", lp),)), str(a))
            for lp, a, t in zip(pool["mean_logprobs"], pool["answers"], pool["texts"])]


QUERY = Query(Problem("p", "q", None), Prompt.user("q"), Exact())


def test_the_fixture_exercises_pruning() -> None:
    masks = "".join(p["keep"] for p in FITTED)
    assert len(FITTED) >= 130 and 0.2 < masks.count("0") / len(masks) < 0.6
    assert any(any(t in p["texts"][:i] for i, t in enumerate(p["texts"])) for p in FITTED)  # repeats


def scores_and_mask(pool: dict) -> tuple[list[float], str]:
    cands = candidates(pool)
    classes = group_answers([c.answer for c in cands], Exact())
    scores, pruning = rpc_scores(classes, [c.sample.text for c in cands], path_probs(pool["mean_logprobs"]))
    return scores, "".join("1" if k else "0" for k in pruning.keep)


@pytest.mark.parametrize("i", range(len(FITTED)))
def test_prune_mask_and_answer_scores_match_the_released_code(i: int) -> None:
    pool = FITTED[i]
    got, keep = scores_and_mask(pool)
    assert keep == pool["keep"]
    by_answer = {str(a): got[pool["answers"].index(a)] for a in pool["answers"]}
    assert by_answer == pytest.approx(pool["scores"], rel=1e-9, abs=1e-11)
    best = max(pool["scores"].values())
    assert pool["scores"][max(by_answer, key=by_answer.__getitem__)] == pytest.approx(best, rel=1e-9)


@pytest.mark.parametrize("i", range(0, len(FITTED), 9))
def test_the_signal_scores_as_the_core_does(i: int) -> None:
    pool = FITTED[i]
    assert RPC().score_sync(QUERY, candidates(pool)) == scores_and_mask(pool)[0]


@pytest.mark.parametrize("i", range(len(DEGENERATE)))
def test_degenerate_pools_are_not_pruned_where_the_released_code_would_be(i: int) -> None:
    pool = DEGENERATE[i]
    pr = reasoning_pruning(path_probs(pool["mean_logprobs"]))
    assert pr.keep.all() and pr.fallback is not None
    got = RPC().score_sync(QUERY, candidates(pool))
    assert sum(got[pool["answers"].index(a)] for a in set(pool["answers"])) == pytest.approx(1.0)
    # what the released code did instead: pruned the lower of two paths, or every path of an
    # all-equal pool (its mean of equal values rounds above them), which leaves NaN scores
    if len(pool["keep"]) == 2 or pool["keep"].count("1") == 0:
        assert "0" in pool["keep"]
    if pool["keep"].count("1") == 0:
        assert all(v is None for v in pool["scores"].values())
    assert not np.isnan(got).any()
