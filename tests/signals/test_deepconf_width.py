"""DeepConf on one logprob per token inverts the confidence, so the token signals refuse it."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thinktwice.errors import CapabilityError, ConfigError
from thinktwice.lm.scripted import synthetic_stat
from thinktwice.registry import signals
from thinktwice.signals.confidence import TOKEN_SIGNALS, TokenSignalConfig, approximate_signals, score_token_signals
from thinktwice.signals.token_stats import require_top_width, token_confidence
from thinktwice.types import Candidate, Sample, TokenStat

DEEPCONF = [c.name for c in TOKEN_SIGNALS if c.name.startswith("deepconf-")]


def cand(conf: float, top: int, n: int = 3) -> Candidate:
    return Candidate(Sample("x" * n, tokens=tuple(synthetic_stat("x", conf, 10, top) for _ in range(n))), "1")


def test_top1_confidence_is_inverted_so_width_one_is_refused() -> None:
    sure, unsure = synthetic_stat("x", 0.99, 10, 1), synthetic_stat("x", 0.3, 10, 1)
    assert token_confidence(unsure) > token_confidence(sure)  # the degenerate case the refusal prevents
    with pytest.raises(CapabilityError, match="top_logprobs"):
        require_top_width((sure,), "deepconf-mean")
    require_top_width((), "deepconf-mean")  # an empty trace has nothing to refuse


def test_k_below_two_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="k must be >= 2"):
        TokenSignalConfig(k=1)
    with pytest.raises(ConfigError):
        signals.create("deepconf-lowest", k=1)


@pytest.mark.parametrize("top", [0, 1])
def test_every_deepconf_signal_refuses_narrow_tops_naming_top_logprobs(top: int) -> None:
    cands = [cand(0.9, 5), cand(0.5, top)]
    for name in DEEPCONF:
        with pytest.raises(CapabilityError, match="top_logprobs >= 2"):
            signals.create(name).score_sync(cands)
    missed: dict[str, str] = {}
    table = score_token_signals(cands, on_missing=lambda s, e: missed.setdefault(s.name, str(e)))
    assert set(missed) == set(DEEPCONF) and all("top_logprobs" in m for m in missed.values())
    assert "mean-logprob" in table


@settings(deadline=None, max_examples=40)
@given(lo=st.floats(0.5, 0.7), hi=st.floats(0.75, 0.99), k=st.integers(2, 9))
def test_with_two_or_more_alternatives_surer_tokens_score_higher(lo: float, hi: float, k: int) -> None:
    # the synthetic distribution spreads 1 - p over 9 tokens; for p > 1/k its top-k mean rises with p
    a, b = cand(lo, k), cand(hi, k)
    for name in DEEPCONF:
        low, high = signals.create(name).score_sync([a, b])
        assert high > low


def test_approximate_signals_names_full_vocab_signals_on_approx_tokens() -> None:
    exact = Candidate(Sample("x", tokens=(TokenStat("x", -0.1, (("x", -0.1), ("y", -2.4)), 0.3, 1.2),)), "1")
    approx = Candidate(Sample("x", tokens=(TokenStat("x", -0.1, (("x", -0.1), ("y", -2.4)), 0.3, 1.2, True),)), "1")
    assert approximate_signals([exact]) == frozenset()
    assert approximate_signals([exact, approx]) == {"self-certainty", "token-entropy"}
    assert approximate_signals([approx], ["self-certainty", "mean-logprob"]) == {"self-certainty"}
    assert math.isfinite(signals.create("self-certainty").score_sync([approx])[0])
