"""RPC core (signals/rpc.py) against a restatement of the released evaluator, plus hostile inputs.

``released_rpc`` below follows the logic of WNJXYK/RPC ``compute_rpc.wpc_evaluator`` (written
afresh from the paper and that code's steps, not copied): scipy's default minimiser under
bounds, the larger-mean component made "high", scalar posteriors, ``p < mean`` threshold, then a
vote over answer classes that keeps one probability per distinct (completion, p) pair.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize
from scipy.special import gamma

from thinktwice.signals import rpc as core
from thinktwice.signals.consistency import RPCConfig, rpc_scores
from thinktwice.signals.rpc import (
    Pruning,
    WeibullMixture,
    consistency_scores,
    fit_weibull_mixture,
    path_probs,
    path_weights,
    prune_paths,
    reasoning_pruning,
)
from thinktwice.strategies.voting import AnswerClass


def _pdf(v, k, lam):
    return (k / lam) * (v / lam) ** (k - 1) * np.exp(-((v / lam) ** k))


def released_rpc(mean_logprobs: list[float], answers: list[str], texts: list[str]) -> tuple[list[bool], dict[str, float]]:
    """Keep mask and un-normalised answer scores as the released evaluator computes them."""
    p = [np.exp(v) for v in mean_logprobs]
    threshold = np.mean(p)
    data = np.array(p)

    def nll(theta):
        w, ka, la, kb, lb = theta
        return -np.sum(np.log(w * _pdf(data, ka, la) + (1 - w) * _pdf(data, kb, lb)))

    with np.errstate(all="ignore"), core._one_blas_thread():  # only for speed: same numbers
        w, ka, la, kb, lb = minimize(nll, [0.5, 1.0, 1.0, 1.5, 2.0], bounds=[(0.2, 0.8)] + [(0.01, None)] * 4).x
        if la * gamma(1 + 1 / ka) < lb * gamma(1 + 1 / kb):
            ka, la, kb, lb, w = kb, lb, ka, la, 1 - w
        keep = []
        for v in p:
            a, b = w * _pdf(v, ka, la), (1 - w) * _pdf(v, kb, lb)
            high = a / (a + b)
            keep.append(not (high < 1 - high and v < threshold))
    buckets: dict[str, dict[str, set[float]]] = {}
    for i, ans in enumerate(answers):
        b = buckets.setdefault(ans, {})
        if keep[i]:
            b.setdefault(texts[i], set()).add(float(p[i]))
    return keep, {a: float(sum(sum(s) for s in b.values())) for a, b in buckets.items()}


def degenerate(mean_logprobs: list[float]) -> bool:
    """Pools where thinktwice deliberately prunes nothing (the released code fits them anyway)."""
    p = np.exp(np.asarray(mean_logprobs, dtype=np.float64))
    if p.size < 3 or not np.all(np.isfinite(p)) or np.any(p <= 0):
        return True
    return bool(p.max() - p.min() <= 1e-12 * p.max())


def classes_of(answers: list[str]) -> list[AnswerClass]:
    out: dict[str, list[int]] = {}
    for i, a in enumerate(answers):
        out.setdefault(a, []).append(i)
    return [AnswerClass(a, tuple(m)) for a, m in out.items()]


def check_against_released(lps: list[float], answers: list[str], texts: list[str]) -> None:
    probs = path_probs(lps)
    scores, pruning = rpc_scores(classes_of(answers), texts, probs)
    if degenerate(lps):
        assert pruning.keep.all() and pruning.fallback is not None
        return
    keep, ref = released_rpc(lps, answers, texts)
    assert pruning.keep.tolist() == keep
    total = sum(ref.values())
    got = {a: scores[answers.index(a)] for a in ref}
    assert got == pytest.approx({a: s / total for a, s in ref.items()}, rel=1e-9, abs=1e-12)
    best = max(ref.values())
    winner = max(got, key=lambda a: (got[a], -answers.index(a)))  # earliest class on ties
    assert math.isclose(ref[winner], best, rel_tol=1e-9)


@st.composite
def pools(draw: st.DrawFn) -> tuple[list[float], list[str], list[str]]:
    """Pools of 3-48 paths; repeated completions (same text, logprob and answer) make ties."""
    n = draw(st.integers(3, 48))
    m = draw(st.integers(1, n))
    palette = draw(st.lists(st.floats(-6.0, -1e-3), min_size=m, max_size=m))
    answers = draw(st.lists(st.sampled_from("ABC"), min_size=m, max_size=m))
    idx = draw(st.lists(st.integers(0, m - 1), min_size=n, max_size=n))
    return [palette[j] for j in idx], [answers[j] for j in idx], [f"text {j}" for j in idx]


@settings(deadline=None, max_examples=40)
@given(pools())
def test_masks_and_answers_match_the_released_algorithm_on_random_pools(pool) -> None:
    check_against_released(*pool)


@pytest.mark.parametrize("n", [3, 5, 16, 64, 128])
@pytest.mark.parametrize("kind", ["uniform", "two-clusters", "narrow", "outlier"])
def test_masks_match_the_released_algorithm_on_seeded_pools(n: int, kind: str) -> None:
    rng = np.random.default_rng(n * 31 + len(kind))
    if kind == "uniform":
        lps = rng.uniform(-3, 0, n)
    elif kind == "two-clusters":
        lps = np.concatenate([rng.normal(-2.0, 0.3, n // 2), rng.normal(-0.2, 0.05, n - n // 2)])
    elif kind == "narrow":
        lps = rng.normal(-0.15, 0.02, n)
    else:
        lps = np.append(rng.normal(-0.3, 0.05, n - 1), -4.0)
    lps = np.clip(lps, -30, -1e-4).tolist()
    answers = [str(a) for a in rng.integers(0, 3, n)]
    check_against_released(lps, answers, [f"t{i}" for i in range(n)])


def test_two_clusters_prune_the_low_one() -> None:
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(0.05, 0.15, 8), rng.uniform(0.75, 0.9, 16)])
    pr = reasoning_pruning(p)
    assert pr.fallback is None and pr.fit is not None
    assert not pr.keep[:8].any() and pr.keep[8:].all() and pr.pruned == 8
    m1, m2 = pr.fit.means()
    assert m1 >= m2 and 0.2 <= pr.fit.w <= 0.8  # high component first
    assert pr.threshold == pytest.approx(p.mean())
    d = pr.detail()
    assert d["pruned"] == 8 and d["fallback"] is None and set(d["fit"]) >= {"k_high", "lam_low", "converged"}


@pytest.mark.parametrize("lps, reason", [
    ([], "fewer than 3"),
    ([-0.3], "fewer than 3"),
    ([-2.0, -0.1], "fewer than 3"),  # the released code prunes the lower of two
    ([-0.7] * 3, "equal"),  # the released code prunes all three (mean(p) rounds above p)
    ([-0.25] * 40, "equal"),
    ([-0.5, -0.5 * (1 + 1e-15), -0.5], "equal"),
    ([-0.1, math.nan, -2.0, -1.5], "NaN"),
    ([-0.1, math.inf, -2.0, -1.5], "infinite"),
    ([-0.1, -math.inf, -2.0, -1.5], "0"),
    ([-0.1, -800.0, -2.0, -1.5], "0"),  # exp underflows to 0, where the Weibull density is degenerate
])
def test_degenerate_pools_fall_back_to_no_pruning_and_say_why(lps: list[float], reason: str) -> None:
    pr = reasoning_pruning(path_probs(lps))
    assert pr.keep.dtype == bool and pr.keep.shape == (len(lps),) and pr.keep.all()
    assert pr.fit is None and pr.fallback is not None and reason in pr.fallback
    assert pr.detail() == {"pruned": 0, "fallback": pr.fallback}
    assert fit_weibull_mixture(path_probs(lps)) is None


def test_extreme_but_valid_probabilities_never_raise() -> None:
    rng = np.random.default_rng(3)
    for lps in ([-700.0, -0.01, -0.02, -350.0], (-rng.exponential(40, 64)).tolist(), [-1e-9, -2e-9, -3e-9],
                [-50.0] * 10 + [-1e-6]):
        pr = reasoning_pruning(path_probs(lps))
        assert pr.keep.shape == (len(lps),)
        assert pr.keep[int(np.argmax(lps))]  # the most likely path is at or above the mean: never pruned


def test_a_non_finite_fit_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    class Result:
        x = np.array([0.5, math.nan, 1.0, 1.5, 2.0])
        success = False

    monkeypatch.setattr(core, "minimize", lambda *a, **k: Result())
    pr = reasoning_pruning([0.1, 0.2, 0.9, 0.8])
    assert pr.keep.all() and pr.fallback == "the mixture fit is not finite"


def test_fit_is_the_same_without_threadpoolctl(monkeypatch: pytest.MonkeyPatch) -> None:
    p = np.exp(np.random.default_rng(5).uniform(-3, 0, 24))
    with_limit = fit_weibull_mixture(p)
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # import now raises ImportError
    assert fit_weibull_mixture(p) == with_limit


def test_high_first_swaps_components_and_weight() -> None:
    m = WeibullMixture(0.3, 2.0, 0.1, 3.0, 0.9)
    h = m.high_first()
    assert (h.w, h.k1, h.lam1, h.k2, h.lam2) == (pytest.approx(0.7), 3.0, 0.9, 2.0, 0.1)
    assert h.high_first() == h
    x = np.array([0.05, 0.9])
    post = h.posterior_first(x)
    assert post[0] < 0.5 < post[1]


def test_path_weights_dedupe_pairs_and_ignore_pruned_or_non_finite() -> None:
    texts = ["a", "a", "a", "b", "c", "d"]
    p = np.array([0.5, 0.5, 0.4, 0.3, math.nan, 0.2])
    keep = np.array([True, True, True, True, True, False])
    # same text twice with the same p counts once; same text with another p counts (as released)
    assert path_weights(texts, p, keep).tolist() == [0.5, 0.0, 0.4, 0.3, 0.0, 0.0]
    assert path_weights(texts, p, keep, dedupe=False).tolist() == [0.5, 0.5, 0.4, 0.3, 0.0, 0.0]
    with pytest.raises(ValueError):
        path_weights(texts[:2], p, keep)


def test_consistency_scores_normalise_over_classes() -> None:
    assert consistency_scores([(0, 2), (1,)], [0.3, 0.2, 0.5]) == pytest.approx([0.8, 0.2, 0.8, 0.0][:3])
    assert consistency_scores([(0,), (1,)], [0.0, 0.0]) == [0.0, 0.0]
    assert consistency_scores([(1,)], [0.9, 0.1, 0.5]) == [0.0, 1.0, 0.0]  # path 0 and 2 in no class


def test_unanswered_paths_enter_the_fit_but_cast_no_vote() -> None:
    rng = np.random.default_rng(11)
    lps = np.concatenate([rng.normal(-2.0, 0.2, 6), rng.normal(-0.2, 0.05, 10)]).tolist()
    texts = [f"t{i}" for i in range(16)]
    answered = classes_of(["A"] * 16)
    _, full = rpc_scores(answered, texts, path_probs(lps))
    # path 15 (high probability) has no answer: same mask, its mass is simply not counted
    partial = [AnswerClass("A", tuple(range(15)))]
    scores, pr = rpc_scores(partial, texts, path_probs(lps))
    assert pr.keep.tolist() == full.keep.tolist()
    assert scores[:15] == [1.0] * 15 and scores[15] == 0.0


def test_prune_off_keeps_everything_and_says_so() -> None:
    _, pr = rpc_scores(classes_of(["A", "B", "A", "B"]), ["1", "2", "3", "4"], [0.9, 0.1, 0.85, 0.05],
                       RPCConfig(prune=False))
    assert isinstance(pr, Pruning) and pr.keep.all() and pr.fallback == "pruning off"
    assert prune_paths([0.9, 0.1, 0.85, 0.05, 0.88, 0.07]).sum() >= 3


async def test_the_signal_logs_why_it_pruned_nothing(caplog: pytest.LogCaptureFixture) -> None:
    from thinktwice.signals.consistency import RPC
    from thinktwice.tasks.base import Query
    from thinktwice.types import Candidate, Problem, Prompt, Sample, TokenStat

    class Same:
        def extract(self, text: str) -> str | None:
            return text

        def canonical(self, a: str) -> str:
            return a

        def equivalent(self, a: str, b: str) -> bool:
            return a == b

    q = Query(Problem("p9", "q", None), Prompt.user("q"), Same())
    cands = [Candidate(Sample(t, tokens=(TokenStat("x", -0.4),)), t) for t in ("a", "b", "a", "c")]
    with caplog.at_level("DEBUG", logger="thinktwice.signals.consistency"):
        got = await RPC().score(q, cands)
    assert got == pytest.approx([1 / 3] * 4)  # the repeated "a" (same text, same p) counts once
    assert "p9" in caplog.text and "equal" in caplog.text
