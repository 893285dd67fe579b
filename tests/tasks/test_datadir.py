"""Data location priority: explicit argument > $THINKTWICE_DATA > shared/datasets; clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from thinktwice.errors import DataError
from thinktwice.tasks.datadir import candidate_dirs, find_file, load_rows


def _make(root: Path, gold: str) -> Path:
    (root / "gsm8k").mkdir(parents=True)
    f = root / "gsm8k" / "test.jsonl"
    f.write_text(f'{{"question": "q", "answer": "#### {gold}"}}\n')
    return f


def test_explicit_dir_beats_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = _make(tmp_path / "a", "1"), _make(tmp_path / "b", "2")
    monkeypatch.setenv("THINKTWICE_DATA", str(tmp_path / "b"))
    assert find_file("gsm8k/test.jsonl", tmp_path / "a") == a
    assert find_file("gsm8k/test.jsonl") == b


def test_cwd_relative_shared_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("THINKTWICE_DATA", raising=False)
    f = _make(tmp_path / "shared" / "datasets", "3")
    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.chdir(repo)
    assert candidate_dirs()[0] == tmp_path / "shared" / "datasets"
    assert find_file("gsm8k/test.jsonl") == f


def test_explicit_path_and_error_message(tmp_path: Path) -> None:
    f = _make(tmp_path, "4")
    src, rows = load_rows("gsm8k/test.jsonl", data_dir=None, path=f, required=("question",))
    assert src == str(f) and rows[0]["question"] == "q" and rows[0]["__line__"] == 1
    with pytest.raises(DataError) as e:
        load_rows("gsm8k/test.jsonl", data_dir=tmp_path / "none", path=None, required=())
    msg = str(e.value)
    assert "THINKTWICE_DATA" in msg and str(tmp_path / "none") in msg and "\n" not in msg


def test_task_options_are_checked() -> None:
    from thinktwice.errors import ConfigError
    from thinktwice.registry import tasks

    assert tasks.create("gsm8k", shots=1, seed=3).shots == 1
    with pytest.raises(ConfigError, match="no option 'shot'.*shots"):
        tasks.create("gsm8k", shot=2)
    with pytest.raises(ConfigError, match="'shots' must be int"):
        tasks.create("math", shots="two")
    with pytest.raises(ConfigError, match="'timeout_s'"):
        tasks.create("humaneval", timeout_s="slow")
    assert tasks.create("humaneval", timeout_s=3).timeout_s == 3  # an int is a valid float


def test_hub_fallback_used_only_without_local_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THINKTWICE_DATA", str(tmp_path))
    src, rows = load_rows("nowhere/x.jsonl", data_dir=None, path=None, required=(),
                          hub=lambda: iter([{"question": "q1"}, {"question": "q2"}]))
    assert src == "hub" and [r["__line__"] for r in rows] == [1, 2]
    with pytest.raises(DataError, match="hub unavailable"):
        load_rows("nowhere/x.jsonl", data_dir=None, path=None, required=(), hub=lambda: None)
