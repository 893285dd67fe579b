"""Calibration metrics on hand-computed cases, plus invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest

from thinktwice.errors import ConfigError
from thinktwice.eval.calibration import (
    MAPPINGS,
    aurc,
    auroc,
    auroc_within,
    brier,
    ece,
    mapping_for,
    risk_coverage,
    selective_accuracy,
    signal_report,
    to_unit,
)


def test_auroc_by_hand_and_ties() -> None:
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert auroc([0.5, 0.5], [1, 0]) == 0.5
    assert auroc([0.5, 0.5, 0.9], [1, 0, 0]) == pytest.approx(0.25)  # 1 tie (½) + 1 loss over 2 pairs
    assert auroc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0
    assert auroc([4, 3, 2, 1], [0, 0, 1, 1]) == 0.0


def test_auroc_nan_when_one_class_is_empty() -> None:
    assert math.isnan(auroc([0.1, 0.9], [1, 1]))
    assert math.isnan(auroc([0.1, 0.9], [0, 0]))
    assert math.isnan(auroc([], []))


def test_auroc_within_groups_only_compares_inside_a_problem() -> None:
    # across problems the signal is inverted, inside each it separates perfectly
    s = [10, 11, 0, 1]
    y = [0, 1, 0, 1]
    assert auroc_within(s, y, ["a", "a", "b", "b"]) == 1.0
    assert auroc(s, y) == pytest.approx(0.75)
    assert math.isnan(auroc_within([1, 2], [1, 1], ["a", "a"]))


def test_ece_equal_width_by_hand() -> None:
    assert ece([0.1, 0.1, 0.9, 0.9], [0, 1, 1, 1], n_bins=10) == pytest.approx((0.8 + 0.2) / 4)
    assert ece([1.0, 1.0], [1, 1], n_bins=15) == 0.0  # p = 1 lands in the closed last bin
    assert ece([0.0, 0.0], [1, 1]) == 1.0


def test_ece_equal_mass_by_hand() -> None:
    assert ece([0.2, 0.4, 0.6, 0.8], [0, 1, 0, 1], n_bins=2, strategy="quantile") == pytest.approx(0.2)
    with pytest.raises(ConfigError):
        ece([0.2], [1], strategy="other")


def test_brier_by_hand() -> None:
    assert brier([0.8, 0.3], [1, 0]) == pytest.approx((0.04 + 0.09) / 2)


def test_selective_accuracy_and_aurc_by_hand() -> None:
    s, y = [0.9, 0.8, 0.7, 0.6], [1, 1, 0, 0]
    assert selective_accuracy(s, y, 0.5) == 1.0
    assert selective_accuracy(s, y, 0.75) == pytest.approx(2 / 3)
    assert selective_accuracy(s, y, 1.0) == 0.5
    assert aurc(s, y) == pytest.approx((0 + 0 + 1 / 3 + 1 / 2) / 4)
    cov, _ = risk_coverage(s, y)
    assert cov.tolist() == [0.25, 0.5, 0.75, 1.0]


def test_selective_accuracy_ties_count_at_their_mean() -> None:
    assert selective_accuracy([1, 1, 0], [1, 0, 1], 1 / 3) == pytest.approx(0.5)
    with pytest.raises(ConfigError):
        selective_accuracy([1], [1], 0.0)


def test_mappings() -> None:
    assert to_unit([3, 1, 2], "rank").tolist() == pytest.approx([2.5 / 3, 0.5 / 3, 1.5 / 3])
    assert to_unit([math.log(0.5), 0.0], "exp").tolist() == pytest.approx([0.5, 1.0])
    assert to_unit([-0.2, 0.5, 1.3], "identity").tolist() == [0.0, 0.5, 1.0]
    assert to_unit([2, 4, 6], "minmax").tolist() == [0.0, 0.5, 1.0]
    assert np.isnan(to_unit([np.nan, 1.0], "rank")[0])
    assert mapping_for("mean-logprob") == "exp" and mapping_for("self-certainty") == "rank"
    assert mapping_for("new-signal", np.array([0.2, 0.7])) == "identity"
    assert mapping_for("new-signal", np.array([3.0])) == "rank"
    assert "p-true" in MAPPINGS
    with pytest.raises(ConfigError):
        to_unit([1.0], "sigmoid")


def test_invariants_on_random_pools() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = int(rng.integers(5, 60))
        p = rng.uniform(0, 1, n)
        y = rng.uniform(0, 1, n) < p
        for strat in ("uniform", "quantile"):
            assert 0.0 <= ece(p, y, strategy=strat) <= 1.0
        assert 0.0 <= brier(p, y) <= 1.0
        a = auroc(p, y)
        assert math.isnan(a) or 0.0 <= a <= 1.0
        if not math.isnan(a):
            assert auroc(-p, y) == pytest.approx(1 - a)  # reversing the scores mirrors AUROC
        assert selective_accuracy(p, y, 1.0) == pytest.approx(y.mean())


def test_signal_report_bootstrap_is_seeded_and_brackets_the_point() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat([f"q{i}" for i in range(30)], 4)
    y = rng.uniform(size=120) < 0.6
    s = y * 0.3 + rng.uniform(size=120)
    s[[0, 5]] = np.nan
    r1 = signal_report("p-true", s, y, groups, n_boot=200, seed=3)
    r2 = signal_report("p-true", s, y, groups, n_boot=200, seed=3)
    assert r1 == r2
    assert r1.n == 118 and r1.n_missing == 2 and r1.mapping == "identity"
    lo, hi = r1.ci["auroc"]
    assert lo <= r1.auroc <= hi and hi - lo > 0
    assert set(r1.selective) == {0.5, 0.8, 1.0}
    assert r1.ci["sel@1"][0] <= r1.selective[1.0] <= r1.ci["sel@1"][1]
    assert r1.to_dict()["signal"] == "p-true"


def test_signal_report_one_class_gives_nan_auroc() -> None:
    r = signal_report("vote-share", [0.2, 0.4, 0.9], [1, 1, 1], n_boot=50)
    assert math.isnan(r.auroc) and math.isnan(r.ci["auroc"][0])
    assert r.accuracy == 1.0
