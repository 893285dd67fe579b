"""`thinktwice calibrate` on a stored run and live on a task (scripted backend), and bad input."""

from __future__ import annotations

import json

import pytest

from thinktwice.eval.store import RunStore
from thinktwice.lm.scripted import synthetic_stat, tokenize
from thinktwice.testing.cli import run_cli
from thinktwice.types import Problem, Sample


def stored_run(db) -> int:
    with RunStore(db) as st:
        rid = st.create_run(kind="pool", config={}, task="gsm8k", backend="scripted", model="m",
                            strategy="sample", seed=0)
        probs = [Problem(f"q{i}", f"Tom has {i} apples and buys 2 more. How many?", str(i + 2)) for i in range(5)]
        st.put_problems(rid, probs)
        for i, p in enumerate(probs):
            texts = [f"The answer is {i + 2}.", f"The answer is {i + 2}.", f"The answer is {i + 9}."]
            confs = [0.9, 0.7 + 0.02 * i, 0.4]
            ss = [Sample(t, tokens=tuple(synthetic_stat(w, c, 10, 3) for w in tokenize(t))) for t, c in zip(texts, confs)]
            st.put_samples(rid, p.id, ss, answers=[str(i + 2), str(i + 2), str(i + 9)], correct=[True, True, False])
    return rid


def test_calibrate_stored_run_json_and_plots(tmp_path, capsys) -> None:
    db = tmp_path / "r.db"
    rid = stored_run(db)
    outdir = tmp_path / "plots"
    code, out, err = run_cli(["calibrate", "--run", str(rid), "--store", str(db), "--signals",
                              "all", "--no-plots", "--json", "--boot", "50"], capsys)
    assert code == 0, err
    data = json.loads(out)
    by = {s["signal"]: s for s in data["signals"]}
    assert by["mean-logprob"]["auroc"] == 1.0 and by["vote-share"]["auroc"] == 1.0
    assert by["mean-logprob"]["n"] == 15 and set(by["mean-logprob"]["selective"]) == {"0.5", "0.8", "1"}
    assert "p-true" in {s["signal"] for s in data["skipped"]}
    assert "skipping p-true" in err
    assert data["plots"] == [] and not outdir.exists()


def test_calibrate_table_output(tmp_path, capsys) -> None:
    db = tmp_path / "r.db"
    rid = stored_run(db)
    code, out, _ = run_cli(["calibrate", "--run", str(rid), "--store", str(db), "--signals", "path-prob,rpc",
                            "--out", str(tmp_path / "p"), "--boot", "20"], capsys)
    assert code == 0
    assert "path-prob" in out and "rpc" in out and "AUROC" in out
    assert (tmp_path / "p" / "path-prob-reliability.png").stat().st_size > 1000
    assert (tmp_path / "p" / "rpc-risk-coverage.png").stat().st_size > 1000


def test_calibrate_live_on_gsm8k_with_scripted_backend(tmp_path, capsys) -> None:
    db = tmp_path / "r.db"
    script = ["-B", 'replies=["The answer is 18.", "The answer is 3.", "so 17"]', "-B", "cycle=true"]
    code, out, err = run_cli(["calibrate", "--task", "gsm8k", "--limit", "2", "-n", "3", "--backend", "scripted",
                              *script, "--store", str(db), "--signals", "mean-logprob,vote-share,verbalized",
                              "--no-plots", "--json", "--boot", "20"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["candidates"] == 6
    with RunStore(db) as st:
        (info,) = st.list_runs()
        assert info.kind == "pool" and sum(st.sample_counts(info.id).values()) == 6
        assert st.scores(info.id, "verbalized")  # model-called scores stored for re-use


@pytest.mark.parametrize(
    ("args", "msg"),
    [
        (["calibrate"], "either --run"),
        (["calibrate", "--task", "gsm8k"], "needs --backend"),
        (["calibrate", "--run", "1", "--signals", "p-true"], "pass --backend"),
        (["calibrate", "--run", "1", "--signals", "warp-signal"], "Unknown signal"),
    ],
)
def test_calibrate_bad_input_is_one_line(tmp_path, capsys, args, msg) -> None:
    db = tmp_path / "r.db"
    stored_run(db)
    code, _, err = run_cli([*args, "--store", str(db)], capsys)
    assert code == 2 and msg in err and "Traceback" not in err


def test_calibrate_missing_tokens_named_signal_errors(tmp_path, capsys) -> None:
    db = tmp_path / "r.db"
    with RunStore(db) as st:
        rid = st.create_run(kind="pool", config={}, task=None, backend="openai", model="m", strategy="s", seed=0)
        st.put_problems(rid, [Problem("a", "q?", "1")])
        st.put_samples(rid, "a", [Sample("1", endpoint="openai"), Sample("2", endpoint="openai")],
                       answers=["1", "2"], correct=[True, False])
    code, _, err = run_cli(["calibrate", "--run", str(rid), "--store", str(db), "--signals", "self-certainty"], capsys)
    assert code == 2 and "full next-token distribution" in err


def test_list_signals_names_needs_and_cost(capsys) -> None:
    code, out, _ = run_cli(["calibrate", "--list-signals"], capsys)
    assert code == 0
    for name in ("self-certainty", "p-true", "fobar", "deepconf-lowest", "rpc", "usc-agreement"):
        assert name in out
    assert "arXiv 2207.05221" in out
