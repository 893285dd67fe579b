"""Beam search and MCTS find the only correct path of a scripted reasoning tree."""

from __future__ import annotations

from thinktwice.lm.scripted import Reply, ScriptedBackend
from thinktwice.strategies import create_strategy
from thinktwice.strategies.search import Node, puct
from thinktwice.types import Budget

TREE = {
    "": [("Step a", 0.9), ("Step b", 0.5)],
    "Step a\n": [("Step c", 0.9), ("Step d", 0.4)],
    "Step b\n": [("Step e", 0.6), ("Step f", 0.5)],
    "Step a\nStep c\n": [("Done #### 7", 0.95), ("Done #### 6", 0.3)],
    "Step a\nStep d\n": [("Done #### 5", 0.5), ("Done #### 4", 0.45)],
    "Step b\nStep e\n": [("Done #### 3", 0.6), ("Done #### 2", 0.55)],
    "Step b\nStep f\n": [("Done #### 1", 0.5), ("Done #### 0", 0.52)],
}


def tree_backend():
    def handler(prompt, params, index):
        text, conf = TREE[prompt.assistant_prefix][index % 2]
        return Reply(text, confidence=conf)

    return ScriptedBackend(handler=handler)


def test_puct_prefers_unvisited_high_prior():
    parent = Node("", visits=4)
    a = Node("a", prior=0.8, visits=0, parent=parent)
    b = Node("b", prior=0.2, visits=3, total=1.5, parent=parent)
    assert puct(parent, a, 1.0) == 0.8 * 2 / 1
    assert puct(parent, b, 1.0) == 0.5 + 0.2 * 2 / 4


async def test_mcts_finds_the_only_correct_path(make_query):
    b = tree_backend()
    d = await create_strategy("mcts", max_depth=3).run(make_query(gold="7"), b)
    assert d.answer == "7"
    assert d.response == "Step a\nStep c\nDone #### 7\n"
    assert d.stopped_because == "converged"
    assert d.usage.calls == 7 and d.stages["expand"].calls == 7  # every inner node expanded once
    assert b.calls[0][1].stop == ("\n",)
    assert b.calls[0][1].temperature == 0.7 and abs(b.calls[-1][1].temperature - 0.7 * 0.75**2) < 1e-12


async def test_beam_search_finds_it_and_respects_budget(make_query):
    d = await create_strategy("step-beam", max_depth=3, beam_width=1).run(make_query(), tree_backend())
    assert d.answer == "7" and d.usage.calls == 3
    d = await create_strategy("step-beam", max_depth=3, beam_width=2).run(make_query(), tree_backend())
    assert d.answer == "7" and d.usage.calls == 1 + 2 + 2

    d = await create_strategy("mcts", max_depth=3).run(make_query(), tree_backend(), Budget(max_calls=2))
    assert d.stopped_because == "budget" and d.usage.calls == 2
    d = await create_strategy("step-beam", max_depth=3, beam_width=2).run(
        make_query(), tree_backend(), Budget(max_tokens=10))
    assert d.usage.completion_tokens <= 10 and d.stopped_because == "budget"


async def test_p_true_value_is_billed(make_query):
    def handler(prompt, params, index):
        if "Proposed Answer" in prompt.text():
            return Reply(" (A", confidence=0.8)
        text, conf = TREE[prompt.assistant_prefix][index % 2]
        return Reply(text, confidence=conf)

    d = await create_strategy("step-beam", max_depth=3, beam_width=1, value="p-true").run(
        make_query(), ScriptedBackend(handler=handler))
    assert d.stages["p-true"].calls > 0 and d.answer is not None


async def test_context_overflow_ends_a_path_not_the_search(make_query):
    from thinktwice.errors import ContextLengthExceeded

    def handler(prompt, params, index):
        if prompt.assistant_prefix.count("\n") >= 2 and "Step b" in prompt.assistant_prefix:
            return Reply("", error=ContextLengthExceeded("prompt too long"))
        text, conf = TREE[prompt.assistant_prefix][index % 2]
        return Reply(text, confidence=conf)

    d = await create_strategy("mcts", max_depth=3).run(make_query(), ScriptedBackend(handler=handler))
    assert d.answer == "7" and any(t.kind == "context-full" for t in d.trace)
