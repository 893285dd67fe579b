"""Latent-layer signals (logit lens, probe) on a tiny random Qwen2 model built in the test."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from thinktwice.errors import CapabilityError, ConfigError
from thinktwice.eval.probe import fit_probe
from thinktwice.eval.signal_eval import resolve_signals
from thinktwice.lm.hf import HFBackend
from thinktwice.lm.hf_tiny import save_tiny
from thinktwice.lm.meter import Meter
from thinktwice.lm.scripted import ScriptedBackend
from thinktwice.signals.latent import LogitLens, LogitLensStability, ProbeSignal, lens_scores
from thinktwice.tasks.base import Query
from thinktwice.types import Candidate, Problem, Prompt, Sample

PROMPT = Prompt.user("What is 7 times 6?")
TEXT = "7 times 6: we add 7 six times. The answer is 42."


class LastNumber:
    def extract(self, text: str) -> str | None:
        import re

        nums = re.findall(r"\d+", text)
        return nums[-1] if nums else None

    def canonical(self, answer: str) -> str:
        return answer

    def equivalent(self, a: str, b: str) -> bool:
        return a == b


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> HFBackend:
    return HFBackend(str(save_tiny(tmp_path_factory.mktemp("tiny-lens"), num_hidden_layers=4)), device="cpu")


def _query() -> Query:
    return Query(Problem("p", "What is 7 times 6?", "42"), PROMPT, LastNumber())  # type: ignore[arg-type]


def _cand(text: str) -> Candidate:
    return Candidate(Sample(text), None)


@pytest.mark.parametrize(("top1", "earliest", "stability"), [
    ([3, 3, 3, 3], 0.0, 1.0),
    ([5, 3, 3, 3], 0.25, 1.0),
    ([3, 5, 3, 3], 0.5, 1.0),
    ([3, 3, 5, 3], 0.75, 1.0),
    ([3, 3, 3, 5], 1.0, 0.0),
])
def test_lens_scores_by_hand(top1: list[int], earliest: float, stability: float) -> None:
    assert lens_scores(np.array(top1), 3) == (earliest, stability)
    e, s = lens_scores(np.array(top1 * 2), 3, last_frac=0.5)  # 8 layers, last 4
    assert 0 <= e <= 1 and s == float(np.mean(np.array(top1 * 2)[-4:] == 3))


async def test_logit_lens_matches_a_direct_per_layer_computation(lm: HFBackend) -> None:
    at = TEXT.rfind("42")
    res = await lm.logit_lens(PROMPT, TEXT, at)
    model, tok = lm.hf_model, lm.tokenizer
    p_ids = lm.prompt_tokens(PROMPT)
    enc = tok(TEXT, add_special_tokens=False, return_offsets_mapping=True)
    j = next(i for i, (a, b) in enumerate(enc["offset_mapping"]) if a <= at < b)
    ids = p_ids + enc["input_ids"]
    assert res.token_index == j and res.target == ids[len(p_ids) + j] and res.n_layers == 4
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    pos = len(p_ids) + j - 1
    final = torch.log_softmax(out.logits[0, pos].float(), -1)
    assert int(res.top1[-1]) == int(final.argmax())  # the last layer's lens is the model's own prediction
    assert res.target_logprob[-1] == pytest.approx(float(final[res.target]), abs=1e-4)
    for layer in range(1, 4):  # HF's hidden_states[l] (l < n_layers) is the pre-norm residual after block l
        h = out.hidden_states[layer][0, pos]
        logits = model.lm_head(model.model.norm(h)).float()
        assert int(res.top1[layer - 1]) == int(logits.argmax())


async def test_hidden_states_are_the_residual_stream(lm: HFBackend) -> None:
    hs = await lm.hidden_states(PROMPT, TEXT, layers=[0, 2], positions=[0, -1])
    assert hs.states.shape == (2, 2, 64) and hs.positions == (0, hs.n_completion - 1)
    ids = lm.prompt_tokens(PROMPT) + lm.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert hs.prompt_tokens == len(ids)
    with torch.inference_mode():
        out = lm.hf_model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    n_p = len(ids) - hs.n_completion
    for i, layer in enumerate((0, 2)):
        for k, p in enumerate((n_p, len(ids) - 1)):
            np.testing.assert_allclose(hs.states[i, k], out.hidden_states[layer][0, p].numpy(), atol=1e-5)
    with pytest.raises(ConfigError):
        await lm.hidden_states(PROMPT, TEXT, layers=[9])


async def test_logit_lens_signals_score_and_charge_the_meter(lm: HFBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    from thinktwice.lm import hf_latent

    passes: list[int] = []
    real = hf_latent.logit_lens
    monkeypatch.setattr(hf_latent, "logit_lens", lambda *a: passes.append(1) or real(*a))
    meter = Meter(lm)
    cands = [_cand(TEXT + " "), _cand("no number here"), _cand("so it is 41")]  # texts no other test used
    scores = await LogitLens().score(_query(), cands, meter)
    assert 0 <= scores[0] <= 1 and 0 <= scores[2] <= 1 and math.isnan(scores[1])
    assert len(passes) == 2
    assert meter.usage.calls == 2 and meter.stages["logit-lens"].prompt_tokens == meter.usage.prompt_tokens > 0
    stab = await LogitLensStability().score(_query(), cands, meter)
    assert 0 <= stab[0] <= 1 and math.isnan(stab[1])
    # the stability signal reuses the cached passes: no forward pass, nothing billed
    assert len(passes) == 2 and "logit-lens-stability" not in meter.stages and meter.usage.calls == 2
    fresh = await lm.logit_lens(_query().prompt, "so it is 41", len("so it is "))
    assert fresh.cached and len(passes) == 2


async def test_latent_signals_need_the_hf_backend() -> None:
    meter = Meter(ScriptedBackend())
    with pytest.raises(CapabilityError, match="hf:PATH"):
        await LogitLens().score(_query(), [_cand(TEXT)], meter)
    with pytest.raises(ConfigError):
        LogitLens(last_frac=0)


async def test_probe_signal_scores_from_a_saved_probe(lm: HFBackend, tmp_path: object) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 64))
    y = x[:, 0] > 0
    path = fit_probe(x, y, layer=2, model=lm.model).save(tmp_path / "p.npz")  # type: ignore[operator]
    (sig,) = resolve_signals(f"probe:{path}", has_model=True)
    assert isinstance(sig, ProbeSignal) and sig.name == "probe:p" and sig.probe.layer == 2
    meter = Meter(lm)
    scores = await sig.score(_query(), [_cand(TEXT), _cand("")], meter)
    assert 0 < scores[0] < 1 and math.isnan(scores[1])
    hs = await lm.hidden_states(PROMPT, TEXT, layers=[2], positions=[-1])
    assert scores[0] == pytest.approx(float(sig.probe.predict(hs.states[0])[0]))
    assert meter.stages["probe"].calls == 1
    with pytest.raises(ConfigError, match="probe:PATH"):
        resolve_signals("probe", has_model=True)
    assert not any(s.name.startswith("probe") for s in resolve_signals("all", has_model=True))
