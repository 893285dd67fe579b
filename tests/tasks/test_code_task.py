"""HumanEval task: loading, extraction, sandboxed grading, and the pass@k estimator."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import pytest

from thinktwice.errors import ConfigError
from thinktwice.registry import tasks
from thinktwice.tasks import Task
from thinktwice.tasks.code import HumanEvalTask, build_program, pass_at_k
from thinktwice.types import Problem
from thinktwice.verify import bwrap_support

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
needs_data = pytest.mark.skipif(not (DATA / "humaneval" / "HumanEval.jsonl").exists(), reason="no datasets")
_BWRAP = bwrap_support(os.path.realpath(sys.executable))
needs_bwrap = pytest.mark.skipif(not _BWRAP.ok, reason=f"grading runs code under bubblewrap, which cannot run "
                                 f"here ({_BWRAP.reason}); apt-get install bubblewrap")

TOY = Problem(
    "toy/0",
    "from typing import List\n\n\ndef total(xs: List[int]) -> int:\n    \"\"\"Sum of xs.\"\"\"\n",
    None,
    {"entry_point": "total", "test": "def check(candidate):\n    assert candidate([1, 2, 3]) == 6\n"},
)


def test_registered_and_protocol() -> None:
    t = tasks.create("humaneval")
    assert isinstance(t, Task) and t.version == "humaneval-p1-g1"


@needs_data
@needs_bwrap
def test_load_real_file_and_canonical_solutions_pass() -> None:
    t = HumanEvalTask(data_dir=DATA)
    probs = t.load(limit=5)
    assert [p.id for p in probs] == [f"HumanEval/{i}" for i in range(5)]
    for p in probs:
        assert t.grade(p.gold, p), p.id
        assert not t.grade(p.question + "    raise NotImplementedError\n", p), p.id


def test_extract_prefers_the_function_block() -> None:
    t = HumanEvalTask()
    text = "Sure:\n```python\ndef total(xs):\n    return sum(xs)\n```\nUsage:\n```python\nprint(total([1]))\n```"
    assert t.extract(text) == "def total(xs):\n    return sum(xs)\n"
    assert t.extract("def f():\n    return 1") == "def f():\n    return 1"  # no fence: whole text
    assert t.extract("   ") is None


@needs_bwrap
def test_grade_full_function_and_body_only() -> None:
    t = HumanEvalTask(timeout_s=5)
    assert t.grade("def total(xs: List[int]) -> int:\n    return sum(xs)\n", TOY)  # imports added
    assert t.grade("    return sum(xs)\n", TOY)  # body appended to the prompt
    assert not t.grade("def total(xs):\n    return 0\n", TOY)
    assert not t.grade(None, TOY)
    assert "check(total)" in build_program("    return 1\n", TOY)


def test_prompt_and_canonical() -> None:
    t = HumanEvalTask()
    prompt = t.prompt(TOY)
    assert len(prompt.messages) == 1 and "def total" in prompt.messages[0].content
    assert t.equivalent("def f():\n    # hi\n    return 1\n\n", "def f():\n    return 1")
    assert not t.equivalent("def f():\n    return 1", "def f():\n    return 2")


def test_options_validated() -> None:
    with pytest.raises(ConfigError):
        HumanEvalTask(shots=2)
    with pytest.raises(ConfigError):
        HumanEvalTask(timeout_s=0)
    with pytest.raises(ConfigError):
        HumanEvalTask().load("train")


def test_pass_at_k_matches_combinatorial_formula() -> None:
    for n, c, k in [(10, 3, 1), (10, 3, 5), (20, 1, 10), (5, 0, 2), (5, 5, 1), (200, 37, 100)]:
        exact = 1.0 - math.comb(n - c, k) / math.comb(n, k)
        assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-9, abs=1e-12)
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(4, 2, 3) == 1.0  # fewer failures than k: some chosen sample passes
    with pytest.raises(ConfigError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ConfigError):
        pass_at_k(3, 1, 4)
