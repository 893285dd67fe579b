"""PoolData's token-score columns: registry names and signs, DeepConf width refusal, approximate marks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from thinktwice.errors import CapabilityError
from thinktwice.eval.calibration import MAPPINGS, mapping_for
from thinktwice.eval.pool_data import ExactAnswers, PoolData
from thinktwice.lm.scripted import synthetic_stat
from thinktwice.registry import signals
from thinktwice.types import Candidate, Sample, TokenStat, Usage


@dataclass
class Row:
    index: int
    sample: Sample
    answer: str | None
    correct: bool


def pool(top: int = 5, approx: bool = False, confs: tuple[float, ...] = (0.9, 0.6, 0.3)) -> tuple[PoolData, list[Sample]]:
    """Two problems x len(confs) samples; sample j's tokens are drawn with confidence confs[j]."""
    samples, rows = [], {}
    for p in ("p0", "p1"):
        rows[p] = []
        for j, c in enumerate(confs):
            toks = tuple(synthetic_stat(w, c, 10, top) for w in ("so", " 4"))
            if approx:
                toks = tuple(TokenStat(t.token, t.logprob, t.top, t.entropy, t.self_certainty, True) for t in toks)
            s = Sample("so 4", tokens=toks, usage=Usage(calls=1, prompt_tokens=5, completion_tokens=2))
            samples.append(s)
            rows[p].append(Row(j, s, "4" if j < 2 else "5", j < 2))
    return PoolData.from_samples(["p0", "p1"], rows, ExactAnswers(), window=4), samples


def test_every_token_column_is_named_and_valued_as_its_registered_signal() -> None:
    data, samples = pool()
    assert "neg-entropy" not in data.scores
    for name in data.scores:
        assert name in signals, name
        assert name in MAPPINGS, name  # calibrate maps it as the signal, not by rank fallback
        sig = signals.create(name)
        want = sig.score_sync([Candidate(s, "4") for s in samples[:3]])
        assert np.allclose(data.score(name)[0], want), name
    assert {"token-entropy", "self-certainty", "deepconf-lowest", "path-prob"} <= set(data.scores)
    assert mapping_for("token-entropy") == "exp"
    assert np.all(data.score("token-entropy") <= 0)  # negated entropy: higher = surer
    assert data.score("token-entropy")[0, 0] > data.score("token-entropy")[0, 2]
    assert data.score("deepconf-mean")[0, 0] > data.score("deepconf-mean")[0, 2]  # sure beats unsure


@pytest.mark.parametrize("top", [0, 1])
def test_deepconf_scores_are_refused_below_two_top_logprobs(top: int) -> None:
    data, _ = pool(top=top)
    for name in ("deepconf-mean", "deepconf-tail", "deepconf-bottom10", "deepconf-lowest"):
        assert name not in data.scores
        with pytest.raises(CapabilityError, match="top_logprobs >= 2"):
            data.score(name)
    assert data.dc_values is None
    with pytest.raises(CapabilityError, match="deepconf-online.*top_logprobs"):
        data.stop_tokens(np.zeros((1, 2, 1), dtype=np.int64), np.zeros((1, 2)))
    assert np.all(np.isfinite(data.score("path-prob")))  # the other columns are unaffected


def test_approx_scores_name_columns_from_a_renormalised_top_k() -> None:
    exact, _ = pool()
    approx, _ = pool(approx=True)
    assert exact.approx_scores == frozenset()
    assert approx.approx_scores == {"self-certainty", "token-entropy"}
    assert approx.approx_scores <= set(approx.scores)
    assert PoolData.synthetic(3, 4).approx_scores == frozenset()
