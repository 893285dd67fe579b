"""ECE bins (10, METHODS §3) for library, plots and CLI; approximate statistics labelled; DeepConf gated on top_logprobs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from thinktwice.eval import calibration
from thinktwice.eval.calibration import APPROX_LABEL, DEFAULT_BINS, ece, signal_report
from thinktwice.eval.calibration_plots import reliability_bins
from thinktwice.eval.signal_eval import load_pools, report_pools, resolve_signals, score_pools
from thinktwice.eval.store import RunStore
from thinktwice.lm.scripted import synthetic_stat, tokenize
from thinktwice.testing.cli import run_cli
from thinktwice.types import Problem, Sample, TokenStat

P, Y = np.array([0.12, 0.18]), np.array([True, False])


def test_default_is_ten_bins_everywhere_in_the_library() -> None:
    assert DEFAULT_BINS == 10
    # 10 bins: both items share [0.1, 0.2) -> |1 - 0.30| / 2; 15 bins would split them (0.53)
    assert ece(P, Y) == pytest.approx(0.35) and ece(P, Y, 15) == pytest.approx(0.53)
    assert signal_report("x", P, Y, n_boot=0).n_bins == 10
    assert signal_report("x", P, Y, n_boot=0).ece == pytest.approx(0.35)
    assert len(reliability_bins(P, Y)[2]) == 10
    assert "M = 10" in (calibration.__doc__ or "")


def test_report_label_marks_approximate_statistics() -> None:
    r = signal_report("self-certainty", P, Y, n_boot=0, approx=True)
    assert r.approx and r.label == f"self-certainty {APPROX_LABEL}" and APPROX_LABEL == "(approx., top-k)"
    d = r.to_dict()
    assert d["approx"] is True and d["label"] == "self-certainty (approx., top-k)" and d["signal"] == "self-certainty"
    plain = signal_report("path-prob", P, Y, n_boot=0)
    assert not plain.approx and plain.label == "path-prob" and plain.to_dict()["approx"] is False


def stored_run(db, approx: bool) -> int:
    with RunStore(db) as st:
        rid = st.create_run(kind="pool", config={}, task="gsm8k", backend="scripted", model="m",
                            strategy="sample", seed=0)
        probs = [Problem(f"q{i}", f"Tom has {i} apples and buys 2 more. How many?", str(i + 2)) for i in range(4)]
        st.put_problems(rid, probs)
        for i, p in enumerate(probs):
            texts = [f"The answer is {i + 2}.", f"The answer is {i + 2}.", f"The answer is {i + 9}."]
            ss = []
            for t, c in zip(texts, (0.9, 0.7 + 0.02 * i, 0.4)):
                toks = [synthetic_stat(w, c, 10, 3) for w in tokenize(t)]
                toks = [TokenStat(s.token, s.logprob, s.top, s.entropy, s.self_certainty, approx) for s in toks]
                ss.append(Sample(t, tokens=tuple(toks)))
            st.put_samples(rid, p.id, ss, answers=[str(i + 2), str(i + 2), str(i + 9)], correct=[True, True, False])
    return rid


@pytest.mark.parametrize("approx", [False, True])
async def test_report_pools_marks_full_vocab_signals_from_approx_tokens(tmp_path, approx: bool) -> None:
    rid = stored_run(tmp_path / "r.db", approx)
    with RunStore(tmp_path / "r.db") as st:
        pools = load_pools(st, rid)
    scores = await score_pools(pools, resolve_signals("self-certainty,token-entropy,mean-logprob", has_model=False))
    by = {r.signal: r for r in report_pools(pools, scores, n_boot=0)}
    assert by["self-certainty"].approx is approx and by["token-entropy"].approx is approx
    assert by["mean-logprob"].approx is False and by["mean-logprob"].n_bins == 10


def test_cli_uses_the_library_default_and_labels_approx_rows(tmp_path, capsys) -> None:
    db = tmp_path / "r.db"
    rid = stored_run(db, approx=True)
    base = ["calibrate", "--run", str(rid), "--store", str(db), "--signals", "self-certainty,path-prob",
            "--no-plots", "--boot", "10"]
    code, out, err = run_cli([*base, "--json"], capsys)
    assert code == 0, err
    by = {s["signal"]: s for s in json.loads(out)["signals"]}
    assert by["path-prob"]["n_bins"] == DEFAULT_BINS and by["path-prob"]["approx"] is False
    assert by["self-certainty"]["approx"] is True and by["self-certainty"]["label"].endswith("(approx., top-k)")
    code, out, _ = run_cli([*base, "--json", "--bins", "15"], capsys)
    assert code == 0 and all(s["n_bins"] == 15 for s in json.loads(out)["signals"])
    code, out, err = run_cli(base, capsys)
    assert code == 0
    assert "self-certainty (approx., top-k)" in out and "path-prob (approx" not in out
    assert "ECE uses 10 equal-width bins" in err


def test_cli_help_states_the_default(capsys) -> None:
    code, out, _ = run_cli(["calibrate", "--help"], capsys)
    assert code == 0
    assert f"default {DEFAULT_BINS}" in " ".join(out.split())


def test_live_capabilities_below_two_top_logprobs_refuse_deepconf_before_drawing() -> None:
    from thinktwice.errors import CapabilityError
    from thinktwice.types import Capabilities

    caps = Capabilities(logprobs=True, top_logprobs=1)
    with pytest.raises(CapabilityError, match="top_logprobs >= 2"):
        resolve_signals("deepconf-lowest", has_model=True, capabilities=caps, backend_name="b")
    skipped: list[str] = []
    names = {s.name for s in resolve_signals("all", has_model=True, capabilities=caps,
                                             on_skip=lambda n, r: skipped.append(n))}
    assert "deepconf-mean" in skipped and "deepconf-mean" not in names and "mean-logprob" in names
