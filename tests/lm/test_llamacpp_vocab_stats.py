"""Row statistics and sampling of the embedded backend, checked against float64 references (no model)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from thinktwice.errors import ConfigError
from thinktwice.lm.vocab_stats import SamplerConfig, row_stats, sample_row, shift_row


def _reference(row: np.ndarray) -> tuple[np.ndarray, float, float]:
    x = row.astype(np.float64)
    finite = np.isfinite(x)
    m = x[finite].max()
    lse = m + math.log(np.exp(x[finite] - m).sum())
    logp = x - lse
    p = np.where(finite, np.exp(logp), 0.0)
    ent = -float((p[finite] * logp[finite]).sum())
    v = int(finite.sum())
    sc = -math.log(v) - float(logp[finite].mean())
    return logp, ent, sc


@pytest.mark.parametrize("masked", [False, True])
def test_row_stats_match_float64_reference(masked: bool) -> None:
    rng = np.random.default_rng(7)
    row = (rng.standard_normal(5000) * 3).astype(np.float32)
    if masked:
        row[rng.choice(5000, 300, replace=False)] = -np.inf
    logp, ent, sc = _reference(row)
    chosen = int(np.argsort(-np.nan_to_num(row, neginf=-1e30))[3])
    st = row_stats(shift_row(row), chosen, 5)
    assert st.logprob == pytest.approx(logp[chosen], abs=1e-4)
    assert st.entropy == pytest.approx(ent, abs=1e-4)
    assert st.self_certainty == pytest.approx(sc, abs=1e-4)
    order = np.argsort(-np.nan_to_num(logp, neginf=-1e30))[:5]
    assert list(st.top_ids) == [int(i) for i in order]
    assert np.allclose(st.top_logprobs, logp[order], atol=1e-4)


def test_uniform_row_has_zero_self_certainty_and_max_entropy() -> None:
    row = np.zeros(1024, dtype=np.float32)
    st = row_stats(shift_row(row), 0, 0)
    assert st.self_certainty == pytest.approx(0.0, abs=1e-5)
    assert st.entropy == pytest.approx(math.log(1024), abs=1e-4)
    assert st.top_ids == ()


def test_greedy_and_degenerate_filters_pick_the_argmax() -> None:
    rng = np.random.default_rng(1)
    row = rng.standard_normal(3000).astype(np.float32)
    best = int(row.argmax())
    g = np.random.default_rng(0)
    for cfg in (SamplerConfig(0.0), SamplerConfig(1.0, top_k=1), SamplerConfig(1.0, top_p=1e-6),
                SamplerConfig(2.0, min_p=0.999)):
        assert sample_row(shift_row(row), cfg, g) == best


def test_sampling_frequencies_follow_the_tempered_distribution() -> None:
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05] + [1e-9] * 600, dtype=np.float64)).astype(np.float32)
    g = np.random.Generator(np.random.PCG64(3))
    draws = np.array([sample_row(shift_row(logits), SamplerConfig(1.0), g) for _ in range(4000)])
    freq = np.bincount(draws, minlength=4)[:4] / len(draws)
    assert np.allclose(freq, [0.5, 0.3, 0.15, 0.05], atol=0.03)
    # temperature 0.5 squares the probabilities before renormalising
    g = np.random.Generator(np.random.PCG64(4))
    draws = np.array([sample_row(shift_row(logits), SamplerConfig(0.5), g) for _ in range(4000)])
    q = np.array([0.5, 0.3, 0.15, 0.05]) ** 2
    assert np.allclose(np.bincount(draws, minlength=4)[:4] / len(draws), q / q.sum(), atol=0.03)


def test_filters_exclude_what_they_should() -> None:
    logits = np.log(np.array([0.4, 0.3, 0.2, 0.06, 0.04], dtype=np.float64)).astype(np.float32)
    g = np.random.Generator(np.random.PCG64(5))

    def seen(cfg: SamplerConfig) -> set[int]:
        return {sample_row(shift_row(logits), cfg, g) for _ in range(600)}

    assert seen(SamplerConfig(1.0, top_k=2)) == {0, 1}
    assert seen(SamplerConfig(1.0, top_p=0.65)) == {0, 1}  # 0.4 < 0.65 <= 0.7: the crossing token stays
    assert seen(SamplerConfig(1.0, min_p=0.4)) == {0, 1, 2}  # p >= 0.4 * 0.4 = 0.16
    assert seen(SamplerConfig(1.0)) == {0, 1, 2, 3, 4}


def test_same_seed_same_draws() -> None:
    row = np.random.default_rng(2).standard_normal(2000).astype(np.float32)
    cfg = SamplerConfig(1.0, top_p=0.9)

    def draws(seed: int) -> list[int]:
        g = np.random.Generator(np.random.PCG64(seed))
        return [sample_row(shift_row(row), cfg, g) for _ in range(50)]

    assert draws(11) == draws(11)
    assert draws(11) != draws(12)


def test_sampler_config_validates() -> None:
    with pytest.raises(ConfigError):
        SamplerConfig(top_p=0.0)
    with pytest.raises(ConfigError):
        SamplerConfig(temperature=-1.0)
