"""GSM8K task: loading the shared data, extraction, grading, few-shot prompt structure."""

from __future__ import annotations

from pathlib import Path

import pytest

from thinktwice.errors import ConfigError, DataError
from thinktwice.registry import tasks
from thinktwice.tasks import Task
from thinktwice.tasks.gsm8k import Gsm8kTask, gsm8k_gold
from thinktwice.types import Problem

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
needs_data = pytest.mark.skipif(not (DATA / "gsm8k" / "test.jsonl").exists(), reason="shared datasets absent")


def test_registered_and_protocol() -> None:
    t = tasks.create("gsm8k")
    assert isinstance(t, Task)
    assert t.version == "gsm8k-p1-g1"
    assert tasks.create("gsm8k", shots=2).version != t.version


@needs_data
def test_load_real_file() -> None:
    probs = Gsm8kTask(data_dir=DATA).load("test", limit=5)
    assert len(probs) == 5
    assert probs[0].gold == "18"
    assert all(p.gold and p.question for p in probs)
    assert len({p.id for p in probs}) == 5


@needs_data
def test_canonical_solution_grades_correct() -> None:
    t = Gsm8kTask(data_dir=DATA)
    for p in t.load("test", limit=20):
        assert t.grade(t.extract(p.meta["solution"]), p), p.id


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3 + 4 = 7. The answer is 18.", "18"),
        ("#### 1,000", "1000"),
        ("First 5 then 6 then 7", "7"),
        ("The answer is 12. Then 13 more apples", "12"),
        ("ANSWER: $42", "42"),
        ("so \\boxed{\\frac{3}{4}} cups", "3/4"),
        ("no digits here", None),
    ],
)
def test_extract(text: str, expected: str | None) -> None:
    assert Gsm8kTask().extract(text) == expected


def test_gold_parsing() -> None:
    assert gsm8k_gold("work\n#### $1,234.") == "1234"
    with pytest.raises(ValueError):
        gsm8k_gold("no marker")


def test_none_is_wrong() -> None:
    t = Gsm8kTask()
    assert not t.grade(None, Problem("x", "q", "5"))


@needs_data
def test_few_shot_structure_and_determinism() -> None:
    t = Gsm8kTask(data_dir=DATA, shots=3, seed=7)
    p = t.load("test", limit=1)[0]
    prompt = t.prompt(p)
    roles = [m.role for m in prompt.messages]
    assert roles == ["user", "assistant"] * 3 + ["user"]
    assert p.question in prompt.messages[-1].content
    assert all("The answer is" in m.content and "<<" not in m.content for m in prompt.messages[1:-1:2])
    again = Gsm8kTask(data_dir=DATA, shots=3, seed=7).prompt(p)
    assert again == prompt
    other = Gsm8kTask(data_dir=DATA, shots=3, seed=8).prompt(p)
    assert other != prompt


def test_zero_shot_prompt() -> None:
    prompt = Gsm8kTask().prompt(Problem("a", "How many?", "3"))
    assert [m.role for m in prompt.messages] == ["user"]
    assert "How many?" in prompt.messages[0].content


def test_bad_options() -> None:
    with pytest.raises(ConfigError):
        Gsm8kTask(shots=-1)
    with pytest.raises(ConfigError):
        Gsm8kTask().load("validation")


def test_missing_data_dir_message(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="THINKTWICE_DATA") as e:
        Gsm8kTask(data_dir=tmp_path).load()
    assert "gsm8k/test.jsonl" in str(e.value)


def test_env_var_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "test.jsonl").write_text('{"question": "1+1?", "answer": "1+1=2\\n#### 2"}\n')
    monkeypatch.setenv("THINKTWICE_DATA", str(tmp_path))
    probs = Gsm8kTask().load()
    assert [p.gold for p in probs] == ["2"]


def test_bad_gold_names_line(tmp_path: Path) -> None:
    f = tmp_path / "g.jsonl"
    f.write_text('{"question": "a", "answer": "#### 1"}\n{"question": "b", "answer": "no marker"}\n')
    with pytest.raises(DataError, match=r"g\.jsonl:2"):
        Gsm8kTask(path=f).load()
