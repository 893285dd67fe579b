"""vote-share, answer-entropy, RPC and USC agreement, with hand-computed scores."""

from __future__ import annotations

import math

import numpy as np
import pytest

from thinktwice.lm.meter import Meter
from thinktwice.lm.scripted import ScriptedBackend, synthetic_stat, tokenize
from thinktwice.registry import signals
from thinktwice.signals.consistency import RPCConfig, parse_usc
from thinktwice.signals.rpc import fit_weibull_mixture, prune_paths
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


def query(pid: str = "p1") -> Query:
    return Query(Problem(pid, "What is 2+2?", "4"), Prompt.user("What is 2+2?"), Digits())


def cand(text: str, conf: float = 0.9) -> Candidate:
    stats = tuple(synthetic_stat(t, conf, 10, 2) for t in tokenize(text))
    return Candidate(Sample(text, tokens=stats), Digits().extract(text))


async def test_vote_share_counts_equivalent_answers_over_all_candidates() -> None:
    cs = [cand("4"), cand("04"), cand("5"), cand("no idea")]
    assert await signals.create("vote-share").score(query(), cs, None) == [0.5, 0.5, 0.25, 0.0]


async def test_answer_entropy_by_hand() -> None:
    cs = [cand("4"), cand("4"), cand("5"), cand("6")]
    f = np.array([0.5, 0.25, 0.25])
    want = 1 - float(-(f * np.log(f)).sum()) / math.log(3)
    assert await signals.create("answer-entropy").score(query(), cs, None) == pytest.approx([want] * 4)
    assert await signals.create("answer-entropy").score(query(), cs[:2], None) == [1.0, 1.0]
    assert all(math.isnan(v) for v in await signals.create("answer-entropy").score(query(), [cand("x")], None))


async def test_rpc_without_pruning_is_normalised_path_probability_mass() -> None:
    # one-token texts: path prob = confidence; the duplicate "4" text counts once
    cs = [cand("4", 0.8), cand("4", 0.8), cand("04", 0.4), cand("5", 0.6), cand("none", 0.9)]
    rpc = signals.create("rpc", config=RPCConfig(prune=False))
    total = 0.8 + 0.4 + 0.6
    got = await rpc.score(query(), cs, None)
    assert got == pytest.approx([1.2 / total, 1.2 / total, 1.2 / total, 0.6 / total, 0.0])
    no_dedupe = await signals.create("rpc", prune=False, dedupe=False).score(query(), cs, None)
    assert no_dedupe[0] == pytest.approx(2.0 / 2.6)


def test_weibull_pruning_drops_the_low_cluster_only() -> None:
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(0.05, 0.15, 8), rng.uniform(0.75, 0.9, 16)])
    keep = prune_paths(p)
    assert not keep[:8].any() and keep[8:].all()
    fit = fit_weibull_mixture(p)
    assert fit is not None and 0.2 <= fit.w <= 0.8
    assert prune_paths([0.5, 0.5, 0.5]).all()  # degenerate: nothing pruned
    assert prune_paths([0.1, 0.9]).all()  # too few points to fit


async def test_rpc_with_pruning_removes_low_probability_answer() -> None:
    hi = [cand("4", c) for c in (0.8, 0.82, 0.85, 0.78, 0.88, 0.81, 0.79, 0.86)]
    lo = [cand(f"{d}", c) for d, c in zip((5, 6, 7, 8), (0.1, 0.12, 0.09, 0.11))]
    got = await signals.create("rpc").score(query(), hi + lo, None)
    assert got[:8] == pytest.approx([1.0] * 8) and got[8:] == [0.0] * 4


def test_parse_usc() -> None:
    assert parse_usc("The most consistent response is Response 3.", 4) == 2
    assert parse_usc("The most consistent response is **Response 2**", 4) == 1
    assert parse_usc("I pick response #1", 4) == 0
    assert parse_usc("The most consistent response is Response 9", 4) is None
    assert parse_usc("none of them", 4) is None


async def test_usc_agreement_maps_shuffled_pick_back_and_bills_stage() -> None:
    cs = [cand("so 4"), cand("so 5"), cand("then 4"), cand("so 6")]
    b = ScriptedBackend(handler=lambda p, s, i: "The most consistent response is Response 1")
    m = Meter(b)
    got = await signals.create("usc-agreement").score(query(), cs, m)
    prompt = b.calls[0][0].text()
    first = prompt.split("Response 1:\n", 1)[1].split("\n", 1)[0]  # the text shown first
    chosen = [c.sample.text for c in cs].index(first)
    want = [1.0 if cs[i].answer == cs[chosen].answer else 0.0 for i in range(4)]
    assert got == want
    assert m.stages["usc-agreement"].calls == 1
    assert all(f"Response {k}:" in prompt for k in range(1, 5))
    # same problem -> same order; class credit off -> only the named one
    got2 = await signals.create("usc-agreement", class_credit=False).score(query(), cs, Meter(b))
    assert got2 == [1.0 if i == chosen else 0.0 for i in range(4)]


async def test_usc_falls_back_to_vote_share_on_unparseable_reply(caplog: pytest.LogCaptureFixture) -> None:
    cs = [cand("4"), cand("4"), cand("5")]
    m = Meter(ScriptedBackend(["I cannot decide."]))
    got = await signals.create("usc-agreement").score(query(), cs, m)
    assert got == pytest.approx([2 / 3, 2 / 3, 1 / 3])
    assert "vote-share" in caplog.text
