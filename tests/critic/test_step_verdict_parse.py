"""The earliest-error parser on real-looking critic outputs (including malformed ones)."""

import pytest

from thinktwice.signals.step_critic import parse_earliest_error, split_steps, step_value

CASES = [
    # explicit final markers
    ("Step 0 is fine. Step 1 multiplies wrongly.\nEarliest error: Step 1", 1),
    ("...\nEarliest error: none", -1),
    ("Earliest error: Step 0", 0),
    ("earliest error: step 3.", 3),
    ("**Earliest error:** Step 2", None),  # markdown between the words: not our format, and no other cue
    ("Earliest error: 4", 4),
    ("Earliest error - Step 2", 2),
    ("The earliest error is in Step 2.", 2),
    ("The earliest error is at step two.", 2),
    ("Earliest error: None (all steps are correct)", -1),
    ("Earliest error: N/A", -1),
    ("Earliest error: -1", -1),
    # ProcessBench-style boxed answers
    ("The first incorrect paragraph is paragraph 1.\n\\boxed{1}", 1),
    ("All paragraphs are correct.\n\n\\boxed{-1}", -1),
    ("\\boxed{ 0 }", 0),
    ("So the answer is \\boxed{\\text{none}}", -1),
    ("\\boxed{2} ... wait, actually \\boxed{3}", 3),
    ("\\boxed{Step 4}", 4),
    # free-form claims about a step
    ("Step 2 is incorrect because 12*3 is 36, not 32.", 2),
    ("In step 1 the model adds instead of subtracting. Step 1 contains an error.", 1),
    ("Step 3 has a calculation error: 45/5 = 9.", 3),
    ("Looking closely, step 4 introduces a mistake when converting hours.", 4),
    ("The first error occurs in step 2, where the discount is applied twice.", 2),
    ("The first mistake is in paragraph 1.", 1),
    ("The error is in step 5.", 5),
    ("There is a miscalculation in step 2 and another one in step 4.", 2),
    ("Step 3 is wrong. Also, step 1 is wrong.", 1),  # earliest of the claims
    ("Step 1 is not incorrect; it is fine. Step 2 is incorrect.", 2),
    ("There is no error in step 0. Step 2 is wrong though.", 2),
    # whole-solution verdicts
    ("I checked every step. All steps are correct.", -1),
    ("There are no errors in this solution.", -1),
    ("No errors found.", -1),
    ("Every step is correct, and the final answer 18 is right.", -1),
    ("The solution is correct.", -1),
    ("The whole solution is correct!", -1),
    ("No incorrect steps.", -1),
    # malformed or unclear
    ("", None),
    ("I am not sure.", None),
    ("The solution seems plausible but I could not verify it", None),
    ("Step", None),
    ("\\boxed{}", None),
    ("\\boxed{banana}", None),
    ("The answer is 42.", None),
    ("Step 17 is incorrect.", None),  # out of range for a 6-step solution
    ("Earliest error: Step 9", None),  # out of range
    ("Earliest error: Step -3", None),
]


@pytest.mark.parametrize("text, expected", CASES)
def test_parse_earliest_error(text, expected):
    assert parse_earliest_error(text, n_steps=6) == expected


def test_table_is_large_enough():
    assert len(CASES) >= 40


def test_split_steps_and_value():
    assert split_steps("a\n\n b \n c") == ["a", "b", "c"]
    assert step_value(-1, 4) == 1.0 and step_value(1, 4) == 0.25 and step_value(0, 4) == 0.0
    import math

    assert math.isnan(step_value(None, 4))


async def test_step_critic_signal_scores_share_of_steps_before_the_error():
    from thinktwice.lm.meter import Meter
    from thinktwice.lm.scripted import ScriptedBackend
    from thinktwice.signals.step_critic import StepCritic
    from thinktwice.tasks.base import Query
    from thinktwice.types import Candidate, Problem, Prompt, Sample

    b = ScriptedBackend(rules={"Step 3:": ["Earliest error: Step 1"], "Step 0: only": ["Earliest error: none"],
                               "Step 0:": ["???"]})
    fmt = object()
    query = Query(Problem("p", "q"), Prompt.user("q"), fmt)  # type: ignore[arg-type]
    cands = [Candidate(Sample("a\nb\nc\nd"), "1"), Candidate(Sample("only"), "2"), Candidate(Sample("x\ny"), "3"),
             Candidate(Sample("a\nb\nc\nd"), "1")]
    meter = Meter(b)
    scores = await StepCritic().score(query, cands, meter)
    assert scores[0] == 0.25 and scores[1] == 1.0 and scores[3] == 0.25
    import math

    assert math.isnan(scores[2])
    assert meter.usage.calls == 3 and set(meter.stages) == {"step-critic"}  # identical texts critiqued once
