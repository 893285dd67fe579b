import math

import pytest

from thinktwice.errors import ConfigError
from thinktwice.lm.scripted import Reply, ScriptedBackend
from thinktwice.strategies import create_strategy
from thinktwice.strategies.greedy import Greedy
from thinktwice.strategies.self_consistency import SelfConsistency
from thinktwice.tasks.base import Query
from thinktwice.types import Budget, Capabilities


def query(task, i=2):
    return Query.from_task(task, task.load()[i])


async def test_self_consistency_majority_and_accounting(tiny_task):
    b = ScriptedBackend(["so 4", "so 5", "no idea", "so 4", "so 5", "so 4"])
    d = await SelfConsistency(n=6, batch=4).run(query(tiny_task), b, seed=1)
    assert d.answer == "4" and d.confidence == pytest.approx(3 / 5)
    assert d.votes == {"4": 3.0, "5": 2.0}
    assert [n for _, _, n in b.calls] == [4, 2]  # two concurrent calls, n=4 and n=2
    assert d.usage.calls == 2 and d.usage.completion_tokens == sum(c.sample.usage.completion_tokens
                                                                    for c in d.candidates)
    assert d.stopped_because == "done" and d.strategy == "self-consistency"
    assert d.candidates[d.chosen].answer == "4"


async def test_self_consistency_without_native_n_uses_single_calls(tiny_task):
    caps = Capabilities(logprobs=True, native_n=False)
    b = ScriptedBackend(["4"], cycle=True, capabilities=caps)
    d = await SelfConsistency(n=3).run(query(tiny_task), b)
    assert [n for _, _, n in b.calls] == [1, 1, 1] and d.usage.calls == 3


async def test_self_consistency_respects_token_budget(tiny_task):
    b = ScriptedBackend(["a b c 4"], cycle=True)
    d = await SelfConsistency(n=8, batch=8).run(query(tiny_task), b, Budget(max_tokens=12))
    assert d.usage.completion_tokens <= 12
    assert d.stopped_because == "done" or d.stopped_because == "budget"


async def test_seeds_differ_per_call_and_repeat_per_seed(tiny_task):
    b1 = ScriptedBackend(["4"], cycle=True)
    b2 = ScriptedBackend(["4"], cycle=True)
    await SelfConsistency(n=4, batch=2).run(query(tiny_task), b1, seed=3)
    await SelfConsistency(n=4, batch=2).run(query(tiny_task), b2, seed=3)
    seeds1 = [p.seed for _, p, _ in b1.calls]
    assert seeds1 == [p.seed for _, p, _ in b2.calls] and len(set(seeds1)) == 2


async def test_greedy_uses_temperature_zero_and_reports_mean_prob(tiny_task):
    b = ScriptedBackend([Reply("it is 4", confidence=0.5)])
    d = await Greedy().run(query(tiny_task), b)
    assert b.calls[0][1].temperature == 0.0
    assert d.answer == "4" and d.confidence == pytest.approx(0.5)
    assert math.isclose(d.usage.completion_tokens, 3)


def test_create_strategy_validates_options():
    with pytest.raises(ConfigError, match="no option"):
        create_strategy("greedy", n=4)
    with pytest.raises(ConfigError):
        create_strategy("self-consistency", n=0)
