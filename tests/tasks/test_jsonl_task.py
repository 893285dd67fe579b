"""The jsonl task: field mapping, graders, and DataError messages that name FILE:LINE."""

from __future__ import annotations

from pathlib import Path

import pytest

from thinktwice.errors import ConfigError, DataError
from thinktwice.registry import tasks
from thinktwice.tasks import Task
from thinktwice.tasks.datadir import read_jsonl
from thinktwice.tasks.jsonl import JsonlTask

DATA = Path(__file__).resolve().parents[1] / "data"


def test_loads_with_field_mapping() -> None:
    t = tasks.create("jsonl", path=DATA / "small_qa.jsonl", question_field="q", answer_field="a", id_field="id")
    assert isinstance(t, Task)
    probs = t.load(limit=2)
    assert [p.id for p in probs] == ["p1", "p2"]
    assert probs[0].question == "What is 2+3?" and probs[0].gold == "5"
    assert t.grade(t.extract("2+3 makes 5, so the answer is 5."), probs[0])
    assert t.grade(t.extract("It is 1/2"), probs[1])  # numeric grader: 1/2 == 0.5
    assert not t.grade(None, probs[0])


def test_malformed_json_names_file_and_line() -> None:
    t = JsonlTask(path=DATA / "malformed.jsonl", question_field="q", answer_field="a")
    with pytest.raises(DataError, match=r"malformed\.jsonl:3: invalid JSON"):
        t.load()


def test_missing_field_names_file_line_and_field() -> None:
    t = JsonlTask(path=DATA / "missing_field.jsonl", question_field="q", answer_field="a")
    with pytest.raises(DataError) as e:
        t.load()
    msg = str(e.value)
    assert "missing_field.jsonl:3" in msg and "'a'" in msg  # line 2 is blank and skipped, not dropped


def test_empty_and_absent_files() -> None:
    with pytest.raises(DataError, match=r"empty\.jsonl.*empty"):
        JsonlTask(path=DATA / "empty.jsonl").load()
    with pytest.raises(DataError, match=r"nope\.jsonl"):
        JsonlTask(path=DATA / "nope.jsonl").load()


def test_non_object_line(tmp_path: Path) -> None:
    f = tmp_path / "list.jsonl"
    f.write_text('{"question": "a", "answer": "1"}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"list\.jsonl:2: expected a JSON object"):
        read_jsonl(f)


def test_duplicate_ids(tmp_path: Path) -> None:
    f = tmp_path / "dup.jsonl"
    f.write_text('{"question": "a", "answer": "1", "id": 7}\n{"question": "b", "answer": "2", "id": 7}\n')
    with pytest.raises(DataError, match=r"dup\.jsonl:2: duplicate id"):
        JsonlTask(path=f, id_field="id").load()


@pytest.mark.parametrize(
    ("grader", "response", "gold", "ok"),
    [
        ("exact", "Thinking...\nThe answer is Paris.", "paris", True),
        ("exact", "The answer is Lyon.", "Paris", False),
        ("contains", "I believe it is Paris, France.", "Paris", True),
        ("contains", "Marseille", "Paris", False),
        ("math", "so $\\boxed{\\dfrac{1}{2}}$", "0.5", True),
        ("math", "no box: 1/2", "0.5", False),  # math grader requires \boxed{}
        ("numeric", "costs $1,000 in total", "1000", True),
    ],
)
def test_graders(tmp_path: Path, grader: str, response: str, gold: str, ok: bool) -> None:
    f = tmp_path / "one.jsonl"
    f.write_text(f'{{"question": "q", "answer": "{gold}"}}\n')
    t = JsonlTask(path=f, grader=grader)
    (p,) = t.load()
    assert t.grade(t.extract(response), p) is ok


def test_options_validated() -> None:
    with pytest.raises(ConfigError):
        JsonlTask()
    with pytest.raises(ConfigError, match="grader"):
        JsonlTask(path="x.jsonl", grader="fuzzy")
    with pytest.raises(ConfigError, match="train_path"):
        JsonlTask(path="x.jsonl", shots=2)
    with pytest.raises(ConfigError, match="question"):
        JsonlTask(path="x.jsonl", template="no placeholder")


def test_few_shot_from_train_file_is_deterministic() -> None:
    kw = {"path": DATA / "small_qa.jsonl", "train_path": DATA / "small_qa.jsonl", "question_field": "q",
          "answer_field": "a", "id_field": "id", "shots": 2}
    t = JsonlTask(**kw, seed=1)  # type: ignore[arg-type]
    p = t.load()[0]
    prompt = t.prompt(p)
    roles = [m.role for m in prompt.messages]
    assert roles == ["user", "assistant"] * 2 + ["user"]  # a reserve replaces the question itself
    assert all(p.question not in m.content for m in prompt.messages[:-1])
    assert JsonlTask(**kw, seed=1).prompt(p) == prompt  # type: ignore[arg-type]
    assert all(m.content.startswith("The answer is") for m in prompt.messages if m.role == "assistant")
