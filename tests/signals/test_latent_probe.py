"""Probe fitting (eval/probe.py) and `thinktwice probe fit` on a stored run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from thinktwice.errors import ConfigError, DataError
from thinktwice.eval.probe import Probe, ProbeConfig, fit_logistic, fit_probe


def _separable(n: int = 120, d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.5
    x = rng.normal(size=(n, d))
    x[:, 3] += np.where(y, 3.0, -3.0)  # one informative direction
    return x, y, [f"q{i // 4}" for i in range(n)]


def test_probe_separates_separable_features_on_held_out_problems() -> None:
    x, y, groups = _separable()
    probe = fit_probe(x, y, groups, layer=5, model="m")
    assert probe.meta["heldout_auroc"] > 0.99 and probe.meta["train_auroc"] > 0.99
    assert probe.meta["n_heldout"] == 32 and probe.meta["n_train"] == 88  # 8 of 30 problems, 4 samples each
    assert abs(probe.weights[3]) == np.abs(probe.weights).max()


def test_probe_is_seeded_and_round_trips(tmp_path: Path) -> None:
    x, y, groups = _separable()
    a = fit_probe(x, y, groups, layer=5, model="m", config=ProbeConfig(seed=1))
    b = fit_probe(x, y, groups, layer=5, model="m", config=ProbeConfig(seed=1))
    np.testing.assert_array_equal(a.weights, b.weights)
    path = a.save(tmp_path / "probe.bin")
    assert path.exists() and not (tmp_path / "probe.bin.npz").exists()
    c = Probe.load(path)
    assert (c.layer, c.model, c.meta["heldout_auroc"]) == (5, "m", a.meta["heldout_auroc"])
    np.testing.assert_allclose(c.predict(x), a.predict(x))
    (tmp_path / "junk.npz").write_bytes(b"not a probe")
    with pytest.raises(DataError):
        Probe.load(tmp_path / "junk.npz")
    with pytest.raises(ConfigError):
        Probe.load(tmp_path / "missing.npz")
    with pytest.raises(ConfigError):
        a.predict(np.zeros((2, 3)))


def test_logistic_regression_matches_the_optimality_condition() -> None:
    x, y, _ = _separable(n=60, d=4, seed=2)
    w, b = fit_logistic(x, y, l2=0.5)
    p = 1 / (1 + np.exp(-(x @ w + b)))
    grad_w = x.T @ (p - y) + 0.5 * w
    assert np.abs(grad_w).max() < 1e-6 and abs(float((p - y).sum())) < 1e-6


def test_probe_refuses_one_class_and_bad_config() -> None:
    x, _, _ = _separable(n=20)
    with pytest.raises(DataError):
        fit_probe(x, np.ones(20, dtype=bool), layer=1, model="m")
    with pytest.raises(ConfigError):
        ProbeConfig(l2=0)
    with pytest.raises(ConfigError):
        ProbeConfig(holdout=1.0)


def test_probe_fit_command_on_a_stored_run(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from typer.testing import CliRunner

    from thinktwice.cli import app
    from thinktwice.eval.store import RunStore
    from thinktwice.lm.hf_tiny import save_tiny
    from thinktwice.types import Problem, Sample

    model_dir = save_tiny(tmp_path / "tiny", num_hidden_layers=3)
    store = tmp_path / "runs.db"
    with RunStore(store) as st:
        rid = st.create_run(kind="pool", config={})
        problems = [Problem(f"p{i}", f"What is {i} + {i}?", str(2 * i)) for i in range(6)]
        st.put_problems(rid, problems)
        for p in problems:
            texts = [f"So {p.question[8:-1]} = {p.gold}.", "I think it is 3.", f"The answer is {p.gold}", "No idea"]
            st.put_samples(rid, p.id, [Sample(t) for t in texts], answers=[None] * 4,
                           correct=[True, False, True, False])
    out = tmp_path / "probe.npz"
    res = CliRunner().invoke(app, ["probe", "fit", "--run", str(rid), "--store", str(store),
                                   "--backend", f"hf:{model_dir}", "--out", str(out), "-B", "device=cpu"])
    assert res.exit_code == 0, res.output
    probe = Probe.load(out)
    assert probe.layer == 2 and probe.model == "tiny" and probe.dim == 64  # default 2/3 of 3 layers
    assert probe.meta["n_train"] + probe.meta["n_heldout"] == 24 and probe.meta["prefill_tokens"] > 0
    assert "AUROC" in res.output
    bad = CliRunner().invoke(app, ["probe", "fit", "--run", str(rid), "--store", str(store), "--backend",
                                   f"hf:{model_dir}", "--out", str(out), "--layer", "9", "-B", "device=cpu"])
    assert bad.exit_code != 0
