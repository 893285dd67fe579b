"""Scoring a stored pool with signals: grouping by problem, skipping, caching, reports."""

from __future__ import annotations

import math

import numpy as np
import pytest

from thinktwice.errors import CapabilityError, ConfigError
from thinktwice.eval.signal_eval import load_pools, report_pools, resolve_signals, score_pools
from thinktwice.eval.store import RunStore
from thinktwice.lm.meter import Meter
from thinktwice.lm.scripted import ScriptedBackend, synthetic_stat, tokenize
from thinktwice.types import Capabilities, Problem, Sample


def sample(text: str, conf: float, tokens: bool = True) -> Sample:
    stats = tuple(synthetic_stat(t, conf, 10, 3) for t in tokenize(text)) if tokens else None
    return Sample(text, tokens=stats, model="m")


def make_store(path, tokens: bool = True) -> int:
    st = RunStore(path)
    rid = st.create_run(kind="pool", config={}, task=None, backend="scripted", model="m", strategy="sample", seed=0)
    probs = [Problem(f"q{i}", f"What is {i}+{i}?", str(2 * i)) for i in range(4)]
    st.put_problems(rid, probs)
    for i, p in enumerate(probs):
        right, wrong = str(2 * i), str(2 * i + 1)
        texts = [f"so {right}", f"so {right}", f"so {wrong}", "no idea"]
        confs = [0.9, 0.8, 0.3, 0.2]
        ss = [sample(t, c, tokens) for t, c in zip(texts, confs)]
        answers = [right, right, wrong, None]
        st.put_samples(rid, p.id, ss, answers=answers, correct=[True, True, False, False])
    st.close()
    return rid


async def test_token_and_agreement_signals_separate_a_clean_pool(tmp_path) -> None:
    rid = make_store(tmp_path / "r.db")
    with RunStore(tmp_path / "r.db") as st:
        pools = load_pools(st, rid)
        assert len(pools) == 4 and all(len(p.candidates) == 4 for p in pools)
        sigs = resolve_signals("mean-logprob,vote-share,deepconf-mean", has_model=False)
        scores = await score_pools(pools, sigs)
    assert set(scores) == {"mean-logprob", "vote-share", "deepconf-mean"}
    assert scores["vote-share"][:4].tolist() == [0.5, 0.5, 0.25, 0.0]
    reports = {r.signal: r for r in report_pools(pools, scores, n_boot=100)}
    assert reports["mean-logprob"].auroc == 1.0 and reports["vote-share"].auroc == 1.0
    assert reports["mean-logprob"].n == 16 and reports["mean-logprob"].accuracy == 0.5


def test_resolve_signals_skips_model_signals_for_all_but_refuses_named(tmp_path) -> None:
    skipped: list[str] = []
    sigs = resolve_signals("all", has_model=False, on_skip=lambda n, r: skipped.append(n))
    names = {s.name for s in sigs}
    assert "p-true" in skipped and "p-true" not in names and "mean-logprob" in names
    with pytest.raises(ConfigError, match="--backend"):
        resolve_signals("p-true", has_model=False)
    with pytest.raises(ConfigError, match="no signals"):
        resolve_signals(" , ", has_model=False)


async def test_missing_tokens_raise_when_named_and_skip_for_all(tmp_path) -> None:
    rid = make_store(tmp_path / "r.db", tokens=False)
    with RunStore(tmp_path / "r.db") as st:
        pools = load_pools(st, rid)
        with pytest.raises(CapabilityError, match="per-token logprobs"):
            await score_pools(pools, resolve_signals("mean-logprob", has_model=False))
        skipped: list[str] = []
        scores = await score_pools(pools, resolve_signals("all", has_model=False), skip_missing=True,
                                   on_skip=lambda n, r: skipped.append(n))
    assert "mean-logprob" in skipped and "rpc" in skipped
    assert "vote-share" in scores and "mean-logprob" not in scores


async def test_model_signal_scores_are_stored_and_reused(tmp_path) -> None:
    rid = make_store(tmp_path / "r.db")
    b = ScriptedBackend(handler=lambda p, s, i: "Confidence: 70")
    with RunStore(tmp_path / "r.db") as st:
        pools = load_pools(st, rid)
        sigs = resolve_signals("verbalized", has_model=True)
        first = await score_pools(pools, sigs, Meter(b), store=st, run_id=rid)
        calls = len(b.calls)
        again = await score_pools(pools, sigs, Meter(b), store=st, run_id=rid)
        assert len(b.calls) == calls  # served from the store
        await score_pools(pools, sigs, Meter(b), store=st, run_id=rid, rescore=True)
        assert len(b.calls) == 2 * calls
    assert np.allclose(first["verbalized"], 0.7) and np.allclose(again["verbalized"], 0.7)
    # distinct texts per problem: 3 ("so right" repeated once)
    assert calls == 4 * 3


def test_resolve_signals_checks_live_backend_capabilities() -> None:
    caps = Capabilities(logprobs=True, top_logprobs=5)  # no full vocabulary
    with pytest.raises(CapabilityError, match="full_vocab"):
        resolve_signals("self-certainty", has_model=True, capabilities=caps, backend_name="openai")
    skipped: list[str] = []
    names = {s.name for s in resolve_signals("all", has_model=True, capabilities=caps,
                                             on_skip=lambda n, r: skipped.append(n))}
    assert {"self-certainty", "token-entropy"} <= set(skipped)
    assert "deepconf-mean" in names and "self-certainty" not in names


def test_load_pools_refuses_an_empty_run(tmp_path) -> None:
    with RunStore(tmp_path / "e.db") as st:
        rid = st.create_run(kind="pool", config={}, task=None, backend="x", model="m", strategy="s", seed=0)
        with pytest.raises(ConfigError, match="no graded samples"):
            load_pools(st, rid)
    assert math.isfinite(1.0)
