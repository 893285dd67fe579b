"""MATH task: real data, boxed extraction, few-shot prompts, math-verify off the main thread."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import pytest

from thinktwice.errors import ConfigError
from thinktwice.registry import tasks
from thinktwice.tasks import Task
from thinktwice.tasks.extract import boxed, boxed_all
from thinktwice.tasks.grading import math_equal
from thinktwice.tasks.math import MathTask
from thinktwice.types import Problem

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
needs_data = pytest.mark.skipif(not (DATA / "math500" / "test.jsonl").exists(), reason="shared datasets absent")


def test_registered_and_protocol() -> None:
    t = tasks.create("math")
    assert isinstance(t, Task)
    assert t.version == "math-p1-g2"  # g2: hostile expressions are screened before math-verify


@needs_data
def test_load_math500_and_train_sample() -> None:
    t = MathTask(data_dir=DATA)
    test = t.load("test", limit=5)
    train = t.load("train", limit=5)
    assert len(test) == 5 and len(train) == 5
    assert test[0].id.startswith("test/") and test[0].meta["subject"]
    assert {p.id for p in test}.isdisjoint({p.id for p in train})
    for p in test:
        assert t.grade(t.extract(p.meta["solution"]), p), p.id  # reference solutions grade correct


@needs_data
def test_few_shot_prompt_structure_and_determinism() -> None:
    t = MathTask(data_dir=DATA, shots=2, seed=3)
    p = t.load("test", limit=1)[0]
    prompt = t.prompt(p)
    assert [m.role for m in prompt.messages] == ["user", "assistant", "user", "assistant", "user"]
    assert all("\\boxed" in m.content for m in prompt.messages if m.role == "assistant")
    assert p.question in prompt.messages[-1].content
    assert MathTask(data_dir=DATA, shots=2, seed=3).prompt(p) == prompt
    assert MathTask(data_dir=DATA, shots=2, seed=4).prompt(p) != prompt


def test_zero_shot_prompt_asks_for_a_box() -> None:
    prompt = MathTask().prompt(Problem("a", "Find x.", "1"))
    assert len(prompt.messages) == 1 and "\\boxed{}" in prompt.messages[0].content


def test_boxed_brace_balancing() -> None:
    assert boxed("\\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert boxed("a \\boxed{\\{1, 2\\}} b") == "\\{1, 2\\}"  # escaped braces do not count
    assert boxed_all("\\boxed{1} and \\fbox{2} and \\boxed 3") == ["1", "2", "3"]
    assert boxed("\\boxed{oops") is None


def test_fallback_marker_option() -> None:
    strict, lenient = MathTask(), MathTask(fallback_marker=True)
    assert strict.extract("The answer is $\\frac{1}{2}$.") is None
    assert lenient.extract("The answer is $\\frac{1}{2}$.") == "\\frac{1}{2}"
    assert lenient.version != strict.version


def test_bad_split() -> None:
    with pytest.raises(ConfigError, match="splits"):
        MathTask().load("dev")


def test_math_verify_off_main_thread_without_warnings() -> None:
    """math-verify's SIGALRM timeout cannot run in a worker thread; our fallback must still work."""
    out: list[bool] = []

    def work() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out.append(math_equal("\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt{3}}"))  # unique: not cached
            out.append(math_equal("y^2 - 1", "(y-1)(y+2)"))

    t = threading.Thread(target=work)
    t.start()
    t.join(30)
    assert out == [True, False]
