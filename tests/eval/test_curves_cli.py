"""`thinktwice sample`, `curve` and `report` end to end through the CLI (in process)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from thinktwice.cli import app


def test_sample_curve_report_cli(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("THINKTWICE_HOME", str(tmp_path))
    data = tmp_path / "mini.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"What is {i} + {i}?", "answer": f"#### {2 * i}"})
                              for i in range(1, 4)) + "\n")
    runner = CliRunner()
    replies = json.dumps(["The answer is 2.", "The answer is 4.", "I get 6. The answer is 6.", "no idea"])
    res = runner.invoke(app, ["sample", "--task", "gsm8k", "-T", f"path={data}", "-n", "8", "--batch", "4",
                              "--backend", "scripted", "-B", f"replies={replies}", "-B", "cycle=true"])
    assert res.exit_code == 0, res.output
    assert "3/3 problems complete" in res.output
    out = tmp_path / "curves"
    res = runner.invoke(app, ["curve", "--run", "1", "--strategies", "greedy,sc,esc:2,weighted-sc:path-prob",
                              "-B", "20", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    payload, _ = json.JSONDecoder().raw_decode(res.output[res.output.index("{"):])  # stderr follows
    labels = [c["label"] for c in payload["curves"]]
    assert labels == ["greedy", "sc", "esc", "weighted-sc:path-prob", "pass@k"]
    sc = payload["curves"][1]
    assert len(sc["accuracy"]) == 8 and all(lo <= a <= hi for a, lo, hi in zip(sc["accuracy"], sc["lo"], sc["hi"]))
    # every call of n=4 takes one full cycle of the 4 replies: each problem gets 2 of 8 correct
    assert abs(payload["curves"][-1]["accuracy"][0] - 0.25) < 1e-9
    assert (out / "curves_tokens.png").stat().st_size > 1000 and (out / "curves_calls.png").exists()
    res = runner.invoke(app, ["report", "1", "--out", str(tmp_path / "rep"), "--strategies", "sc,esc", "-B", "10"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "rep" / "report.html").exists() and (tmp_path / "rep" / "summary.json").exists()
    res = runner.invoke(app, ["curve", "--run", "1", "--strategies", "best-of-n"])
    assert res.exit_code != 0


def test_curve_names_the_pool_greedy_row_and_bills_calls_as_the_pool_backend(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("THINKTWICE_HOME", str(tmp_path))
    runner = CliRunner()
    replies = json.dumps(["The answer is 18.", "#### 3", "no idea", "so 18"])
    for native in ("true", "false"):  # the scripted backend can say it has no native n
        caps = json.dumps({"logprobs": True, "top_logprobs": 5, "native_n": native == "true"})
        res = runner.invoke(app, ["sample", "--task", "gsm8k", "--limit", "2", "-n", "4", "--batch", "4",
                                  "--temperature", "0.6", "--backend", "scripted", "-B", f"replies={replies}",
                                  "-B", "cycle=true", "-B", f"capabilities={caps}"])
        assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["curve", "--run", "1", "--strategies", "deepconf-online", "-B", "5"])
    assert res.exit_code == 0, res.output
    assert "note:" in res.output and "no stored trace is longer than the group window" in res.output
    for run, calls_at_4 in ((1, 1.0), (2, 4.0)):
        res = runner.invoke(app, ["curve", "--run", str(run), "--strategies", "greedy,sc", "-B", "5", "--json"])
        assert res.exit_code == 0, res.output
        payload, _ = json.JSONDecoder().raw_decode(res.output[res.output.index("{"):])
        greedy, sc = payload["curves"][0], payload["curves"][1]
        assert greedy["display"] == "SC@1 (first sample at T=0.6)"
        assert payload["native_n"] is (run == 1) and sc["calls"][3] == calls_at_4
