import math

import pytest

from thinktwice.eval.processbench import PBItem, load_processbench, pb_metrics, run_processbench, trivial_predictions
from thinktwice.lm.meter import Meter
from thinktwice.lm.scripted import ScriptedBackend


def test_metrics_by_hand():
    labels = [-1, -1, 2, 2, 0, 3]
    preds = [-1, 1, 2, 1, -1, None]
    m, ci, conf = pb_metrics(labels, preds, n_boot=200)
    # erroneous items (2, 2, 0, 3): exact only the first -> 1/4; correct items: 1 of 2 judged error-free
    assert m["acc_err"] == pytest.approx(0.25) and m["acc_cor"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(2 * 0.25 * 0.5 / 0.75)
    assert conf == {"right (no error)": 1, "false alarm": 1, "exact": 1, "too early": 1, "missed": 1, "unparsed": 1}
    lo, hi = ci["f1"]
    assert 0.0 <= lo <= m["f1"] <= hi <= 1.0


def test_trivial_baselines_score_zero_f1_on_real_data():
    items = load_processbench("gsm8k")
    assert len(items) == 400 and sum(it.label == -1 for it in items) == 193
    labels = [it.label for it in items]
    for kind in ("no-error", "step-0"):
        m, _, _ = pb_metrics(labels, trivial_predictions(items, kind), n_boot=50)
        assert m["f1"] == 0.0
    m, _, _ = pb_metrics(labels, trivial_predictions(items, "step-0"), n_boot=50)
    assert m["acc_err"] == pytest.approx(sum(lb == 0 for lb in labels) / 207)


def test_unknown_subset_is_a_clear_error():
    from thinktwice.errors import DataError

    with pytest.raises(DataError, match="unknown ProcessBench subset"):
        load_processbench("gsm9k")


async def test_run_processbench_majority_and_accounting():
    items = [PBItem("a", "p", ("s0", "s1", "s2"), 1), PBItem("b", "p", ("s0", "s1"), -1)]
    replies = ["Earliest error: Step 1", "Earliest error: Step 2", "Earliest error: Step 1",
               "Earliest error: none", "Step 0 is wrong.", "garbage"]
    b = ScriptedBackend(replies)
    res = await run_processbench(items, Meter(b), prompt="thinktwice", n=3, concurrency=1)
    assert res.preds == [1, -1]  # b: votes none, 0, None -> tie between -1 and 0, earliest wins
    assert res.metrics["acc_err"] == 1.0 and res.metrics["acc_cor"] == 1.0 and res.metrics["f1"] == 1.0
    assert res.usage.calls == 2 and all(p.temperature > 0 for _, p, _ in b.calls)
    assert not math.isnan(res.ci["f1"][0])
