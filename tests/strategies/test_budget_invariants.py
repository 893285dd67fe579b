"""Every registered strategy stays within every kind of Budget and stops cleanly when it runs out."""

from __future__ import annotations

import pytest

from thinktwice.lm.scripted import Reply, ScriptedBackend
from thinktwice.strategies import create_strategy, strategy_names
from thinktwice.types import Budget

OPTIONS = {
    "confidence-gate": {"threshold": 0.99},
    "confidence-refine": {"threshold": 0.99},
    "iterative-deepening": {"threshold": 0.99},
    "mcts": {"max_depth": 3, "n_iters": 8},
    "step-beam": {"max_depth": 3},
    "deepconf-online": {"warm_up": 4, "window": 2, "max_samples": 12},
}
BUDGETS = [Budget(max_tokens=7), Budget(max_calls=2), Budget(max_prompt_tokens=60), Budget(max_samples=3),
           Budget(max_tokens=40, max_calls=5)]
QUESTION = "Ann has 3 pens and buys 4 more. How many pens?"


def backend():
    answers = ["7", "8", "7", "6"]
    count = [0]

    def handler(prompt, params, index):
        count[0] += 1
        return Reply(f"we add so #### {answers[count[0] % 4]}", confidence=[0.9, 0.5, 0.9, 0.3, 0.9])

    return ScriptedBackend(handler=handler)


@pytest.mark.parametrize("name", strategy_names())
@pytest.mark.parametrize("budget", BUDGETS, ids=lambda b: "-".join(f"{k}={v}" for k, v in b.to_dict().items() if v))
async def test_strategy_never_exceeds_budget(name, budget, make_query):
    s = create_strategy(name, **OPTIONS.get(name, {}))
    b = backend()
    d = await s.run(make_query(QUESTION), b, budget)
    u = d.usage
    if budget.max_tokens is not None:
        assert u.completion_tokens <= budget.max_tokens
    if budget.max_calls is not None:
        assert u.calls <= budget.max_calls
    if budget.max_prompt_tokens is not None:
        assert u.prompt_tokens <= budget.max_prompt_tokens
    if budget.max_samples is not None:
        assert sum(n for _, _, n in b.calls) <= budget.max_samples
    assert u.calls == len(b.calls)
    assert d.stopped_because in {"done", "converged", "budget", "confident", "max-samples"}
    assert d.strategy == name


@pytest.mark.parametrize("name", strategy_names())
async def test_strategy_is_deterministic_and_stateless(name, make_query):
    s = create_strategy(name, **OPTIONS.get(name, {}))
    d1 = await s.run(make_query(QUESTION), backend(), Budget(max_calls=12), seed=3)
    d2 = await s.run(make_query(QUESTION), backend(), Budget(max_calls=12), seed=3)
    assert d1.answer == d2.answer and d1.usage.completion_tokens == d2.usage.completion_tokens
    assert [t.kind for t in d1.trace] == [t.kind for t in d2.trace]
