import math

import pytest

from thinktwice.errors import ConfigError
from thinktwice.types import Budget, Capabilities, Decision, Prompt, Sample, SamplingParams, TokenStat, Usage


def test_usage_adds_fieldwise_and_keeps_estimated_flag():
    a = Usage(calls=1, prompt_tokens=10, cached_prompt_tokens=2, completion_tokens=5, seconds=0.5)
    b = Usage(calls=2, prompt_tokens=1, completion_tokens=7, estimated=True)
    c = a + b
    assert (c.calls, c.prompt_tokens, c.cached_prompt_tokens, c.completion_tokens) == (3, 11, 2, 12)
    assert math.isclose(c.seconds, 0.5) and c.estimated and c.total_tokens == 23
    assert Usage.total([a, b, a]).calls == 4


def test_sample_round_trips_through_dict():
    s = Sample("hi there", (TokenStat("hi", -0.1, (("hi", -0.1), ("yo", -2.0)), 0.3, 4.0),), "length",
               Usage(1, 3, 0, 1), "m", 7, "http://a")
    back = Sample.from_dict(s.to_dict())
    assert back == s
    assert Sample.from_dict(s.to_dict(with_tokens=False)).tokens is None


def test_prompt_helpers():
    p = Prompt.user("q", system="sys")
    assert [m.role for m in p.messages] == ["system", "user"]
    assert p.with_prefix("Step 1").assistant_prefix == "Step 1"
    assert Prompt.from_dict(p.to_dict()) == p
    assert Prompt.from_messages([{"role": "user", "content": None}]).messages[0].content == ""


@pytest.mark.parametrize("bad", [dict(max_tokens=-1), dict(temperature=-0.1), dict(top_p=0), dict(min_p=1.0),
                                 dict(temperature=float("nan"))])
def test_sampling_params_reject_bad_values(bad):
    with pytest.raises(ConfigError):
        SamplingParams(**bad)


def test_sampling_params_accept_single_stop_string():
    assert SamplingParams(stop="\n").stop == ("\n",)  # type: ignore[arg-type]


def test_budget_rejects_negative_limits():
    with pytest.raises(ConfigError, match="max_tokens"):
        Budget(max_tokens=-5)


def test_capabilities_has():
    caps = Capabilities(logprobs=True, top_logprobs=5)
    assert caps.has("logprobs") and caps.has("top_logprobs") and not caps.has("full_vocab")
    with pytest.raises(ConfigError):
        caps.has("telepathy")


def test_decision_response_prefers_text_then_chosen():
    from thinktwice.types import Candidate

    c = Candidate(Sample("full text"), "4")
    d = Decision("4", 1.0, (c,), 0, Usage())
    assert d.response == "full text"
    assert Decision("4", 1.0, (c,), None, Usage(), text="fresh").response == "fresh"
    assert d.to_dict()["candidates"][0]["answer"] == "4"
