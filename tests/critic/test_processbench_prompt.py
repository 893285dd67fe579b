"""ProcessBench's released prompt (the default) and its output parser."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from thinktwice.errors import ConfigError
from thinktwice.eval.processbench import (
    PBItem, official_prompt, parse_official, prompt_version, run_processbench,
)
from thinktwice.lm.meter import Meter
from thinktwice.lm.scripted import ScriptedBackend


def test_default_prompt_is_the_released_template() -> None:
    p = official_prompt("What is 2+2?", ["2+2=5.", "So the answer is 5."])
    assert len(p.messages) == 1 and p.messages[0].role == "user"
    assert p.messages[0].content == (
        "The following is a math problem and a solution (split into paragraphs, enclosed with tags and indexed "
        "from 0):\n\n[Math Problem]\n\nWhat is 2+2?\n\n[Solution]\n\n"
        "<paragraph_0>\n2+2=5.\n</paragraph_0>\n\n<paragraph_1>\nSo the answer is 5.\n</paragraph_1>\n\n"
        "Your task is to review and critique the solution paragraph by paragraph. Once you identify an error in a "
        "paragraph, return the index of the paragraph where the earliest error occurs. Otherwise, return the "
        "index of -1 (which typically denotes \"not found\").\n\nPlease put your final answer (i.e., the index) "
        "in \\boxed{}."
    )


def test_prompt_keeps_braces_in_problems_and_steps() -> None:
    text = official_prompt("Find {x}", ["Let $f(x)=\\frac{1}{x}$."]).messages[0].content
    assert "[Math Problem]\n\nFind {x}\n\n" in text
    assert "<paragraph_0>\nLet $f(x)=\\frac{1}{x}$.\n</paragraph_0>" in text


@pytest.mark.parametrize(("reply", "n_steps", "want"), [
    ("Paragraph 2 adds wrongly.\n\n\\boxed{2}", 4, 2),
    ("All paragraphs are right. \\boxed{-1}", 4, -1),
    ("First I thought \\boxed{1}, but the earliest error is in paragraph 0: \\boxed{0}", 4, 0),  # the last box
    ("\\boxed{ 3 }", 4, 3),
    ("\\boxed{+1}", 4, 1),
    ("\\boxed{\\text{2}}", 4, None),  # the released reader stops at the first '}': not an integer
    ("\\boxed{two}", 4, None),
    ("\\boxed{}", 4, None),
    ("\\boxed{2", 4, None),
    ("The earliest error is in paragraph 2.", 4, None),  # no box: not the released format
    ("\\boxed{4}", 4, None),  # past the last paragraph: can never match
    ("\\boxed{-2}", 4, None),
    ("\\boxed{" + "9" * 40 + "}", None, None),
    ("\\boxed{2.0}", 4, None),
])
def test_parse_maps_released_format_to_indices(reply: str, n_steps: int | None, want: int | None) -> None:
    assert parse_official(reply, n_steps) == want


@settings(deadline=None, max_examples=300)
@given(hs.text(), hs.integers(min_value=1, max_value=30))
def test_parse_never_raises_and_stays_in_range(reply: str, n_steps: int) -> None:
    got = parse_official(reply, n_steps)
    assert got is None or -1 <= got < n_steps


@settings(deadline=None, max_examples=200)
@given(hs.text().filter(lambda t: "\\boxed{" not in t), hs.integers(min_value=-1, max_value=19))
def test_a_final_box_wins_over_any_prose(prose: str, k: int) -> None:
    assert parse_official(prose + f"\\boxed{{{k}}}", 20) == k


def test_unknown_prompt_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="official, thinktwice"):
        prompt_version("mine")
    assert prompt_version("official") != prompt_version("thinktwice")


async def test_run_uses_the_released_prompt_by_default_and_survives_hostile_replies() -> None:
    items = [PBItem("a", "p", ("s0", "s1", "s2"), 1), PBItem("b", "q", ("s0", "s1"), -1),
             PBItem("c", "r", ("s0",), 0)]
    replies = ["\\boxed{1}", "\\boxed{-1}", "\\boxed{" + "7" * 5000 + "} \\boxed{\\frac{1}{0}}"]
    b = ScriptedBackend(replies)
    res = await run_processbench(items, Meter(b), concurrency=1)
    assert res.prompt == "official" and res.preds == [1, -1, None]
    assert all("<paragraph_0>" in c[0].text() and "Step 0:" not in c[0].text() for c in b.calls)
    assert res.metrics["acc_err"] == 0.5 and res.metrics["acc_cor"] == 1.0
    assert res.confusion["unparsed"] == 1 and all(p.temperature == 0 for _, p, _ in b.calls)


async def test_voting_with_the_released_prompt_samples_as_the_released_code() -> None:
    b = ScriptedBackend(["\\boxed{0}", "\\boxed{1}", "\\boxed{1}"])
    res = await run_processbench([PBItem("a", "p", ("s0", "s1"), 1)], Meter(b), n=3)
    assert res.preds == [1]
    (_, params, n), = b.calls
    assert n == 3 and params.temperature == 1.0 and params.top_p == 0.9


async def test_thinktwice_prompt_stays_available() -> None:
    b = ScriptedBackend(["Earliest error: Step 1"])
    res = await run_processbench([PBItem("a", "p", ("s0", "s1"), 1)], Meter(b), prompt="thinktwice")
    assert res.preds == [1] and "Step 0:" in b.calls[0][0].text()


async def test_replies_cut_at_max_tokens_are_counted() -> None:
    b = ScriptedBackend(["Paragraph 0 looks fine, paragraph 1 too, and then " * 20 + "\\boxed{1}", "\\boxed{1}"])
    items = [PBItem("a", "p", ("s0", "s1"), 1), PBItem("b", "p", ("s0", "s1"), 1)]
    res = await run_processbench(items, Meter(b), max_tokens=16, concurrency=1)
    assert res.truncated == 1 and res.preds == [None, 1]
