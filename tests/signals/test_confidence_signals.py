"""Registered token signals on scripted samples whose statistics are computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from thinktwice.errors import CapabilityError
from thinktwice.lm.meter import Meter
from thinktwice.lm.scripted import Reply, ScriptedBackend, synthetic_stat, tokenize
from thinktwice.registry import signals
from thinktwice.signals.confidence import TOKEN_SIGNALS, TokenSignalConfig, score_token_signals
from thinktwice.tasks.base import Query
from thinktwice.types import Candidate, Problem, Prompt, Sample


class Digits:
    def extract(self, text: str) -> str | None:
        toks = [t for t in text.split() if t.strip(".").isdigit()]
        return toks[-1].strip(".") if toks else None

    def canonical(self, a: str) -> str:
        return str(int(a))

    def equivalent(self, a: str, b: str) -> bool:
        return int(a) == int(b)


def query() -> Query:
    return Query(Problem("p1", "What is 2+2?", "4"), Prompt.user("What is 2+2?"), Digits())


def draw(replies: list[Reply], top: int = 5) -> list[Candidate]:
    """Samples exactly as the scripted backend renders them (vocabulary of 10 tokens)."""
    out = []
    for r in replies:
        toks = tokenize(r.text)
        confs = [r.confidence] * len(toks) if isinstance(r.confidence, float) else list(r.confidence)
        stats = tuple(synthetic_stat(t, c, 10, top) for t, c in zip(toks, confs))
        s = Sample(r.text, tokens=stats)
        out.append(Candidate(s, Digits().extract(s.text)))
    return out


def test_every_token_signal_is_registered_with_its_name() -> None:
    for cls in TOKEN_SIGNALS:
        assert signals.get(cls.name) is cls
        assert "tokens" in cls.requires


async def test_logprob_signals_by_hand() -> None:
    cands = draw([Reply("the answer 4", confidence=0.5), Reply("so 5", confidence=[0.25, 1.0])])
    q = query()
    mean = await signals.create("mean-logprob").score(q, cands, None)
    seq = await signals.create("seq-logprob").score(q, cands, None)
    pp = await signals.create("path-prob").score(q, cands, None)
    assert mean == pytest.approx([math.log(0.5), math.log(0.25) / 2])
    assert seq == pytest.approx([3 * math.log(0.5), math.log(0.25)])
    assert pp == pytest.approx([0.5, 0.5])


async def test_entropy_and_self_certainty_match_the_synthetic_distribution() -> None:
    cands = draw([Reply("a b", confidence=0.9)])
    st = synthetic_stat("a", 0.9, 10, 5)
    ent = await signals.create("token-entropy").score(query(), cands, None)
    sc = await signals.create("self-certainty").score(query(), cands, None)
    assert ent == pytest.approx([-st.entropy])
    assert sc == pytest.approx([st.self_certainty])


async def test_deepconf_mean_from_top5_by_hand() -> None:
    cands = draw([Reply("x y z", confidence=0.6)], top=5)
    rest = 0.4 / 9
    c_t = -(math.log(0.6) + 4 * math.log(rest)) / 5
    for name in ("deepconf-mean", "deepconf-tail", "deepconf-bottom10", "deepconf-lowest"):
        assert await signals.create(name).score(query(), cands, None) == pytest.approx([c_t])


async def test_deepconf_windows_follow_config() -> None:
    cands = draw([Reply("a b c d", confidence=[0.9, 0.9, 0.2, 0.9])], top=2)

    def c(p: float) -> float:  # top-2 of the 10-token synthetic distribution
        return -(math.log(p) + math.log((1 - p) / 9)) / 2

    cfg = TokenSignalConfig(window=2, tail=1)
    lowest = (await signals.create("deepconf-lowest", config=cfg).score(query(), cands, None))[0]
    tail = (await signals.create("deepconf-tail", config=cfg).score(query(), cands, None))[0]
    assert c(0.2) < c(0.9)  # a less certain token has lower confidence
    assert lowest == pytest.approx((c(0.9) + c(0.2)) / 2)
    assert tail == pytest.approx(c(0.9))


async def test_deepconf_refuses_width_one() -> None:
    cands = draw([Reply("a b", confidence=0.9)], top=1)
    with pytest.raises(CapabilityError, match="k >= 2"):
        await signals.create("deepconf-mean").score(query(), cands, None)


async def test_missing_tokens_raise_capability_error_naming_what_is_missing() -> None:
    bare = [Candidate(Sample("4", tokens=None, model="gpt-x"), "4")]
    with pytest.raises(CapabilityError, match="per-token logprobs.*gpt-x"):
        await signals.create("mean-logprob").score(query(), bare, None)
    with pytest.raises(CapabilityError, match="full next-token distribution"):
        await signals.create("self-certainty").score(query(), bare, None)


async def test_logprobs_without_full_vocab_refuse_entropy() -> None:
    from thinktwice.types import TokenStat

    toks = (TokenStat("4", -0.1, (("4", -0.1),)),)
    cands = [Candidate(Sample("4", tokens=toks), "4")]
    assert (await signals.create("mean-logprob").score(query(), cands, None)) == pytest.approx([-0.1])
    with pytest.raises(CapabilityError, match="entropy"):
        await signals.create("token-entropy").score(query(), cands, None)


def test_score_token_signals_matches_individual_and_reports_missing() -> None:
    cands = draw([Reply("a b c", confidence=0.7), Reply("d e", confidence=0.3)])
    table = score_token_signals(cands)
    assert set(table) == {c.name for c in TOKEN_SIGNALS}
    for cls in TOKEN_SIGNALS:
        assert np.allclose(table[cls.name], cls().score_sync(cands))
    bare = [Candidate(Sample("4"), "4")]
    missed: list[str] = []
    out = score_token_signals(bare, on_missing=lambda s, e: missed.append(s.name))
    assert out == {} and len(missed) == len(TOKEN_SIGNALS)


async def test_token_signals_make_no_calls() -> None:
    b = ScriptedBackend(["4"])
    m = Meter(b)
    cands = draw([Reply("4")])
    await signals.create("mean-logprob").score(query(), cands, m)
    assert b.calls == [] and m.usage.calls == 0


def test_my_signals_follow_the_protocol() -> None:
    from thinktwice.signals.base import Signal

    names = ["mean-logprob", "seq-logprob", "path-prob", "token-entropy", "self-certainty", "deepconf-mean",
             "deepconf-tail", "deepconf-bottom10", "deepconf-lowest", "vote-share", "rpc", "answer-entropy",
             "usc-agreement", "p-true", "p-true-context", "verbalized", "self-critique", "fobar",
             "self-verification"]
    for n in names:
        sig = signals.create(n)
        assert isinstance(sig, Signal) and sig.name == n
        assert isinstance(sig.needs_model, bool)
