"""bench/adaptive.py's replay: the baseline is measured in the same run and caps above n need a larger pool."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "bench" / "adaptive.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_adaptive_under_test", _PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


async def test_replay_rows_against_sc16_with_a_second_cap(bench):
    problems, pools = bench.synthetic_pool(12, 40, seed=3)
    rows = await bench.run(bench.SyntheticTask(), problems, pools, 16, 2, 8, caps=[16, 40])
    by = {r["name"]: r for r in rows}
    assert rows[0]["name"] == "self-consistency@16"
    base = by["self-consistency@16"]
    assert base["delta"] == 0 and base["token_share"] == pytest.approx(1.0) and base["samples"] == 16
    for name in ("adaptive-consistency", "esc", "deepconf-online"):
        assert by[name]["samples"] <= 16
        assert f"{name} (cap 40)" in by
    assert by["esc"]["samples"] <= 15  # whole windows of 5 under a cap of 16
    # a larger cap never stops earlier on the same sample stream
    assert by["adaptive-consistency (cap 40)"]["samples"] >= by["adaptive-consistency"]["samples"]


async def test_cap_above_pool_size_is_refused(bench):
    problems, pools = bench.synthetic_pool(3, 16, seed=0)
    with pytest.raises(SystemExit, match="40 are needed"):
        await bench.run(bench.SyntheticTask(), problems, pools, 16, 1, 8, caps=[40])


def test_target_needs_both_accuracy_and_token_share(bench):
    assert bench.meets_target({"delta": -0.005, "token_share": 0.39})
    assert not bench.meets_target({"delta": -0.02, "token_share": 0.30})
    assert not bench.meets_target({"delta": 0.01, "token_share": 0.41})
