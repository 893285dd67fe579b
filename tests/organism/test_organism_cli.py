"""``thinktwice organism train`` and ``thinktwice demo`` end to end (micro sizes), and import hygiene."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from thinktwice.testing.cli import run_cli


def test_train_micro_writes_a_loadable_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["organism", "train", "--preset", "micro", "--steps", "5", "--out", str(tmp_path / "m"),
                            "--threads", "1", "--eval", "3"], capsys)
    assert code == 0
    summary = json.loads(out)
    assert Path(summary["path"]).is_file() and summary["params"] > 0
    code, _, err = run_cli(["organism", "train", "--preset", "nope", "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "unknown organism preset" in err


def test_demo_prints_the_matched_table_and_writes_the_plot(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    png, js = tmp_path / "demo.png", tmp_path / "demo.json"
    code, out, err = run_cli(["demo", "--problems", "4", "--samples", "4", "--plot", str(png), "--json", str(js)],
                             capsys)
    assert code == 0, err
    assert png.read_bytes()[:4] == b"\x89PNG"
    data = json.loads(js.read_text())
    names = [r["name"] for r in data["rows"]]
    assert names[:2] == ["greedy", "self-consistency@4"]
    greedy, sc = data["rows"][0], data["rows"][1]
    assert greedy["calls"] == 1 and sc["calls"] == 1 and sc["tokens"] > greedy["tokens"]
    assert sc["matched_k"] == 4 and sc["delta"] == pytest.approx(0.0)
    assert [k for k, _, _ in data["sc_curve"]] == [1, 2, 3, 4]
    assert "greedy" in out and "SC@" in out
    for name in ("adaptive-consistency", "best-of-4 self-certainty"):
        assert name in names or any(name in s for s in data["skipped"])


def test_import_thinktwice_does_not_import_torch() -> None:
    code = ("import sys, thinktwice, thinktwice.lm, thinktwice.tasks.arith, thinktwice.organism.arith, "
            "thinktwice.cli; from thinktwice.registry import tasks; tasks.create('arith').load('test', 2); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
