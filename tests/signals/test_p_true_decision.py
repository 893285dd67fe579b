"""P(True) reads the decision position: lead-in "(" / space tokens are skipped, options are case-sensitive."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thinktwice.lm.meter import Meter
from thinktwice.registry import signals
from thinktwice.signals.p_true import option_probability
from thinktwice.tasks.base import Query
from thinktwice.types import Candidate, Capabilities, Problem, Prompt, Sample, SamplingParams, TokenStat, Usage

L = math.log


def stat(token: str, top: dict[str, float]) -> TokenStat:
    """A token chosen with probability ``top[token]`` and the given alternatives (probabilities)."""
    return TokenStat(token, L(top[token]), tuple((t, L(p)) for t, p in top.items()))


PAREN_THEN_B = (
    # the "(" position puts 0.073 on "A" and 0.027 on "B" (73% A among them): not the decision
    stat("(", {"(": 0.9, "A": 0.073, "B": 0.027}),
    stat("B", {"B": 0.8, "A": 0.1, "C": 0.05}),
)


def test_paren_then_b_reads_the_second_token() -> None:
    s = Sample("(B", tokens=PAREN_THEN_B)
    assert option_probability(s) == pytest.approx(0.1 / 0.9)  # was 0.73 from the "(" position


def test_space_token_then_a_reads_the_second_token() -> None:
    toks = (stat(" ", {" ": 0.7, "B": 0.2, "A": 0.1}), stat("A", {"A": 0.6, "B": 0.3}))
    assert option_probability(Sample(" A", tokens=toks)) == pytest.approx(0.6 / 0.9)
    lead = (stat(" (", {" (": 0.95, " A": 0.04, " B": 0.01}), stat("True", {"True": 0.5, "False": 0.25}))
    assert option_probability(Sample(" (True", tokens=lead)) == pytest.approx(2 / 3)


def test_the_article_a_is_not_option_a() -> None:
    toks = (stat(" a", {" a": 0.6, "B": 0.3, "A": 0.1}),)
    assert option_probability(Sample(" a", tokens=toks)) == pytest.approx(0.1 / 0.4)  # was 0.7
    lower = (stat(" true", {" true": 0.5, " True": 0.2, " false": 0.2, " False": 0.1}),)
    assert option_probability(Sample(" true", tokens=lower)) == pytest.approx(2 / 3)
    # neither an option in the top nor a verdict in the text: no score
    assert math.isnan(option_probability(Sample(" a", tokens=(stat(" a", {" a": 0.9}),))))
    assert math.isnan(option_probability(Sample("a) true")))
    assert option_probability(Sample("(A) True")) == 1.0


def test_only_lead_in_tokens_give_no_score() -> None:
    toks = (stat(" ", {" ": 0.9, "A": 0.1}), stat("(", {"(": 0.9, "A": 0.05}))
    assert math.isnan(option_probability(Sample(" (", tokens=toks)))


@settings(deadline=None, max_examples=60)
@given(
    lead=st.sampled_from(["(", " (", " ", "\n", " ( "]),
    lead_a=st.floats(0.0, 0.3), lead_b=st.floats(0.0, 0.3),
    pa=st.floats(0.01, 0.5), pb=st.floats(0.01, 0.49),
)
def test_lead_in_alternatives_never_change_the_score(lead: str, lead_a: float, lead_b: float,
                                                     pa: float, pb: float) -> None:
    first = TokenStat(lead, L(0.4), ((lead, L(0.4)),) + tuple((t, L(p)) for t, p in (("A", lead_a), ("B", lead_b)) if p))
    second = stat("A" if pa >= pb else "B", {"A": pa, "B": pb})
    assert option_probability(Sample(lead + second.token, tokens=(first, second))) == pytest.approx(pa / (pa + pb))


class TopBackend:
    """Replies with fixed token statistics (the scripted backend only synthesises alternatives)."""

    name = model = "top-fake"
    capabilities = Capabilities(logprobs=True, top_logprobs=5)

    def __init__(self, tokens: tuple[TokenStat, ...]) -> None:
        self.tokens = tokens
        self.calls: list[SamplingParams] = []

    async def sample(self, prompt: Prompt, params: SamplingParams, n: int = 1, *, monitor: object = None) -> list[Sample]:
        self.calls.append(params)
        text = "".join(t.token for t in self.tokens)
        return [Sample(text, tokens=self.tokens, usage=Usage(calls=1, prompt_tokens=10, completion_tokens=2))] * n

    def count_tokens(self, prompt: Prompt) -> int:
        return 10

    async def aclose(self) -> None:
        return None


class Digits:
    def extract(self, text: str) -> str | None:
        toks = [t for t in text.split() if t.isdigit()]
        return toks[-1] if toks else None

    def canonical(self, a: str) -> str:
        return a

    def equivalent(self, a: str, b: str) -> bool:
        return a == b


async def test_signal_scores_the_decision_position_and_bills_one_call() -> None:
    b = TopBackend(PAREN_THEN_B)
    m = Meter(b)
    q = Query(Problem("p", "What is 2+2?", "4"), Prompt.user("What is 2+2?"), Digits())
    got = await signals.create("p-true").score(q, [Candidate(Sample("so 5"), "5")], m)
    assert got == [pytest.approx(0.1 / 0.9)]
    assert len(b.calls) == 1 and b.calls[0].max_tokens == 2 and b.calls[0].top_logprobs == 5
    assert m.stages["p-true"].calls == 1 and m.stages["p-true"].completion_tokens == 2
