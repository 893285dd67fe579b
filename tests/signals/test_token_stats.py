"""Hand-computed checks of the token statistics (signals/token_stats.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from thinktwice.errors import CapabilityError, ConfigError
from thinktwice.lm.scripted import synthetic_stat
from thinktwice.signals.token_stats import (
    TokenArrays,
    deepconf_scores,
    group_confidences,
    mean_entropy,
    mean_logprob,
    mean_self_certainty,
    path_prob,
    sequence_logprob,
    token_confidence,
    token_confidences,
)
from thinktwice.types import TokenStat


def tok(lp: float, top: tuple[float, ...] = ()) -> TokenStat:
    return TokenStat("t", lp, tuple((f"a{i}", v) for i, v in enumerate(top)))


def test_logprob_family_by_hand() -> None:
    toks = [tok(math.log(0.5)), tok(math.log(0.25))]
    assert mean_logprob(toks) == pytest.approx((math.log(0.5) + math.log(0.25)) / 2)
    assert sequence_logprob(toks) == pytest.approx(math.log(0.125))
    assert path_prob(toks) == pytest.approx(math.sqrt(0.125))


def test_empty_gives_nan() -> None:
    assert math.isnan(mean_logprob([]))
    assert math.isnan(sequence_logprob([]))
    assert math.isnan(path_prob([]))
    assert math.isnan(mean_entropy([]))
    assert math.isnan(mean_self_certainty([]))
    assert all(math.isnan(v) for v in deepconf_scores([]).values())
    assert group_confidences([]).shape == (0,)


def test_entropy_and_self_certainty_match_synthetic() -> None:
    a, b = synthetic_stat("x", 0.9, 10, 5), synthetic_stat("y", 0.5, 10, 5)
    assert mean_entropy([a, b]) == pytest.approx((a.entropy + b.entropy) / 2)
    # by hand for p = (0.5, 9 x 1/18): H = 0.5 ln 2 + 0.5 ln 18
    assert b.entropy == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(18))
    assert mean_self_certainty([a, b]) == pytest.approx((a.self_certainty + b.self_certainty) / 2)


def test_missing_full_distribution_raises() -> None:
    with pytest.raises(CapabilityError, match="entropy"):
        mean_entropy([tok(-0.1)])
    with pytest.raises(CapabilityError, match="self-certainty"):
        mean_self_certainty([tok(-0.1)])


def test_token_confidence_uses_available_width() -> None:
    s = tok(-0.1, (-0.1, -2.0, -3.0))
    assert token_confidence(s, k=20) == pytest.approx((0.1 + 2.0 + 3.0) / 3)
    assert token_confidence(s, k=2) == pytest.approx((0.1 + 2.0) / 2)
    assert math.isnan(token_confidence(tok(-0.7)))  # no alternatives
    assert token_confidence(tok(-0.1, (-0.1, -math.inf))) == pytest.approx(0.1)
    with pytest.raises(ConfigError):
        token_confidence(s, k=0)


def test_vectorised_confidences_match_scalar_with_ragged_widths() -> None:
    toks = [tok(-0.1, (-0.1, -2.0, -3.0)), tok(-0.5), tok(-0.2, (-0.2, -1.0))]
    got = token_confidences(toks)
    want = [token_confidence(t) for t in toks]
    assert np.allclose(got, want, equal_nan=True) and np.isnan(got[1])


def test_group_confidences_sliding_window() -> None:
    # confidences 1, 2, 3, 4 (width-1 tops)
    toks = [tok(-c, (-c,)) for c in (1.0, 2.0, 3.0, 4.0)]
    assert np.allclose(group_confidences(toks, window=2), [1.5, 2.5, 3.5])
    assert np.allclose(group_confidences(toks, window=4), [2.5])
    assert np.allclose(group_confidences(toks, window=10), [2.5])  # shorter than the window


def test_deepconf_scores_by_hand() -> None:
    confs = [5.0, 1.0, 1.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0]
    toks = [tok(-c, (-c,)) for c in confs]
    s = deepconf_scores(toks, window=2, tail=3, bottom_frac=0.1)
    groups = [(confs[i] + confs[i + 1]) / 2 for i in range(len(confs) - 1)]  # 11 groups
    assert s["mean"] == pytest.approx(sum(confs) / len(confs))
    assert s["tail"] == pytest.approx(5.0)
    assert s["lowest"] == pytest.approx(min(groups)) == pytest.approx(1.0)
    assert s["bottom10"] == pytest.approx(1.0)  # int(11 * 0.1) = 1 group
    s2 = deepconf_scores(toks, window=2, tail=3, bottom_frac=0.3)  # 3 lowest groups: 1, 3, 3
    assert s2["bottom10"] == pytest.approx((1.0 + 3.0 + 3.0) / 3)


def test_arrays_reused_give_same_results() -> None:
    toks = [synthetic_stat("a", c, 50, 5) for c in (0.9, 0.6, 0.3)]
    arr = TokenArrays.from_tokens(toks)
    assert mean_logprob(arr) == mean_logprob(toks)
    assert deepconf_scores(arr, window=2) == deepconf_scores(toks, window=2)
