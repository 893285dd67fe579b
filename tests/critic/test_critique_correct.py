import pytest

from thinktwice.eval.critique import detection_metrics, flip_report, matched_k, pick_balanced
from thinktwice.eval.store import StoredDecision, StoredSample
from thinktwice.lm.scripted import ScriptedBackend
from thinktwice.strategies.critique_correct import CritiqueCorrect, parse_conclusion
from thinktwice.tasks.base import Query
from thinktwice.types import Budget, Sample, Usage


def q(task, i=3):
    return Query.from_task(task, task.load()[i])  # "What is 3+3?" gold 6


async def test_critique_fixes_a_wrong_answer_and_records_the_flip(tiny_task):
    b = ScriptedBackend(rules={
        "[Solution]": ["Step 0 is wrong.\nThe solution is Incorrect.\nThe first error step number: 0\n"
                       "Corrected solution: 3+3 = 6. The answer is 6"],
        "What is 3+3": ["3+3 = 7"],
    })
    d = await CritiqueCorrect(rounds=1).run(q(tiny_task), b)
    assert d.answer == "6" and d.chosen == 1 and len(d.candidates) == 2
    rounds = [t.detail for t in d.trace if t.kind == "round"]
    assert [r["correct"] for r in rounds] == [False, True] and rounds[1]["judged_correct"] is False
    assert d.usage.calls == 2 and set(d.stages) == {"solve", "critique"}


async def test_judged_correct_keeps_answer_and_iterative_rounds_continue_the_conversation(tiny_task):
    b = ScriptedBackend(rules={
        "Review your critique": ["I rechecked. The solution is Correct. The first error step number: -1"],
        "[Solution]": ["All fine. The solution is Correct.\nThe first error step number: -1"],
        "What is 3+3": ["so 6"],
    })
    d = await CritiqueCorrect(rounds=2).run(q(tiny_task), b)
    assert d.answer == "6" and [c.stage for c in d.candidates] == ["solve", "critique-1", "critique-2"]
    second_prompt = b.calls[2][0]
    assert [m.role for m in second_prompt.messages] == ["user", "assistant", "user"]


async def test_budget_stops_rounds(tiny_task):
    b = ScriptedBackend(["so 7", "The solution is Incorrect. Corrected solution: The answer is 6"], cycle=True)
    d = await CritiqueCorrect(rounds=3).run(q(tiny_task), b, Budget(max_calls=2))
    assert d.stopped_because == "budget" and d.usage.calls == 2 and d.answer == "6"


def test_corrected_answer_rules(tiny_task):
    f = CritiqueCorrect.corrected_answer
    assert f(tiny_task, "The solution is Incorrect.\nThe first error step number: 2\nCorrected solution: 9", "5") == "9"
    assert f(tiny_task, "The solution is Correct. The first error step number: -1", "5") == "5"
    assert f(tiny_task, "The solution is Incorrect.\nThe first error step number: 2\nso 8", "5") == "8"
    assert f(tiny_task, "The solution is Incorrect. Corrected solution: I give up", "5") is None
    assert parse_conclusion("... The solution is **Incorrect**") is False and parse_conclusion("hm") is None


def test_detection_metrics_by_hand():
    m = detection_metrics([True, True, False, False, True], [True, False, True, False, None])
    assert m["precision"] == 0.5 and m["recall"] == pytest.approx(1 / 3)
    assert m["f1"] == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3)) and m["accuracy"] == 0.4
    assert m["unparsed"] == 1


def test_flip_report_and_matched_k():
    def dec(rounds):
        trace = [{"kind": "round", "round": i, "answer": a, "correct": c} for i, (a, c) in enumerate(rounds)]
        return StoredDecision("p", None, None, None, None, Usage(), {}, {}, trace, "done", "cc", None)

    rep = flip_report([dec([("1", False), ("2", True)]), dec([("3", True), ("4", False)]),
                       dec([("5", True), ("5", True)]), dec([("6", False), ("6", False)])])
    assert rep.accuracy == [0.5, 0.5] and rep.i_to_c == [0.25] and rep.c_to_i == [0.25] and rep.unchanged == [0.5]
    assert matched_k(300, 100) == 3 and matched_k(10, 100) == 1


def test_pick_balanced_alternates_right_and_wrong():
    ss = [StoredSample("p", i, "sample", Sample(str(i)), str(i), c) for i, c in
          enumerate([True, True, False, True, False])]
    picked = pick_balanced(ss, 4)
    assert [s.correct for s in picked] == [False, True, False, True]
