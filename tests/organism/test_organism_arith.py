"""The arithmetic generator and the arith task: determinism, disjoint splits, valid solutions, grading."""

from __future__ import annotations

import re
from itertools import islice

import pytest

from thinktwice.errors import ConfigError
from thinktwice.organism import arith
from thinktwice.registry import tasks


def _take(seed: int, split: str | None, n: int, d: arith.Difficulty | None = None) -> list[arith.ArithProblem]:
    return list(islice(arith.generate(seed, d, split=split), n))


def test_same_seed_same_problems_and_other_seed_differs() -> None:
    a, b, c = _take(3, "test", 50), _take(3, "test", 50), _take(4, "test", 50)
    assert [p.question for p in a] == [p.question for p in b]
    assert [p.question for p in a] != [p.question for p in c]


def test_splits_are_disjoint_by_construction() -> None:
    d = arith.Difficulty(steps=2)  # a small space, so collisions would show up
    test = {p.question for p in _take(0, "test", 300, d)}
    train = {p.question for p in _take(0, "train", 3000, d)}
    assert test and train and not (test & train)
    assert all(arith.split_of(q) == "test" for q in test)


@pytest.mark.parametrize("order", arith.ORDERS)
def test_every_solution_order_is_arithmetically_valid_and_ends_with_the_answer(order: str) -> None:
    for p in _take(1, None, 200, arith.Difficulty(steps=6, distractors=2)):
        sol = p.solution(order)
        body, final = sol.split("\n#### ")
        assert int(final) == p.answer
        eqs = re.findall(r"(\d+)([+-])(\d+)=(\d+)\.", body)
        assert len(eqs) == body.count("=") and eqs
        for a, op, b, r in eqs:
            assert int(r) == (int(a) + int(b) if op == "+" else int(a) - int(b))
            assert int(r) >= 0
        assert int(eqs[-1][3]) == p.answer


def test_answer_matches_events_and_difficulty_knobs() -> None:
    for p in _take(2, "test", 100, arith.Difficulty(steps=4, distractors=2, max_operand=5)):
        assert p.answer == p.start + sum(p.events) and len(p.events) == 4
        assert all(1 <= abs(e) <= 5 for e in p.events)
        assert p.question.count(".") == 1 + 4 + 2  # start, events, distractors


def test_difficulty_is_validated() -> None:
    with pytest.raises(ConfigError):
        arith.Difficulty(steps=0)
    with pytest.raises(ConfigError):
        arith.Difficulty(distractors=9)
    with pytest.raises(ConfigError):
        arith.render_solution(1, (2,), order="sideways")


def test_task_loads_deterministically_and_grades_gsm8k_style() -> None:
    t = tasks.create("arith", steps=3)
    a, b = t.load("test", 20), t.load("test", 20)
    assert [p.question for p in a] == [p.question for p in b]
    assert [p.id for p in a] == [f"arith-test-{i}" for i in range(20)]
    assert {p.question for p in a}.isdisjoint(p.question for p in t.load("train", 500))
    p = a[0]
    assert t.grade(t.extract(f"{p.meta['solution']}"), p)
    assert t.extract("1+2=3. 3+4=7.\n#### 7") == "7"
    assert t.extract("1+2=3. 3+4=7.") == "7"  # no marker: the last number
    assert t.extract("no numbers") is None
    assert not t.grade(None, p)
    assert t.prompt(p).raw == p.question + "\n"
    assert t.version != tasks.create("arith", steps=4).version
    with pytest.raises(ConfigError):
        t.load("dev")
