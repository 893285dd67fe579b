"""``thinktwice train sft|dpo`` through TRL + PEFT on a tiny random Qwen2 model built here, and ``harvest``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("peft")

from thinktwice.errors import DataError
from thinktwice.lm.hf_tiny import save_tiny
from thinktwice.testing.cli import run_cli
from thinktwice.train.formats import read_jsonl
from thinktwice.train.hf_trainers import HFTrainConfig, train_sft

# transformers/TRL emit deprecation notices of their own; they are not this package's behaviour
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning", "ignore::UserWarning")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny") / "model")


def _write(path: Path, recs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def _last_json(out: str) -> dict:
    return json.loads(out[out.index("{"):])


def test_sft_and_dpo_write_lora_adapters(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sft = _write(tmp_path / "sft.jsonl", [{"prompt": f"What is {i} + 2?", "completion": f" {i}+2={i + 2}.",
                                           "meta": {"run": 1}} for i in range(6)])
    dpo = _write(tmp_path / "dpo.jsonl", [{"prompt": f"What is {i} + 2?", "chosen": f" {i + 2}.",
                                           "rejected": f" {i + 3}.", "meta": {"run": 1}} for i in range(6)])
    for kind, data in (("sft", sft), ("dpo", dpo)):
        code, out, err = run_cli(["train", kind, "--model", str(tiny), "--data", str(data), "--out",
                                  str(tmp_path / kind), "--max-steps", "2", "--batch-size", "2", "--lora-r", "4"],
                                 capsys)
        assert code == 0, err
        summary = _last_json(out)
        assert summary["steps"] == 2 and math.isfinite(summary["loss"])
        cfg = json.loads((tmp_path / kind / "adapter_config.json").read_text())
        assert cfg["r"] == 4 and (tmp_path / kind / "adapter_model.safetensors").stat().st_size > 0


def test_conversational_sft(tiny: Path, tmp_path: Path) -> None:
    data = _write(tmp_path / "c.jsonl", [{"messages": [{"role": "user", "content": f"{i}+1?"},
                                                       {"role": "assistant", "content": f"{i + 1}"}]}
                                         for i in range(4)])
    summary = train_sft(tiny, data, tmp_path / "c", HFTrainConfig(max_steps=1, batch_size=2))
    assert summary["steps"] == 1 and (tmp_path / "c" / "adapter_config.json").is_file()


def test_bad_data_is_a_one_line_error_naming_the_line(tiny: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n" + '{"prompt": "a"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2"):
        read_jsonl(bad)
    code, _, err = run_cli(["train", "sft", "--model", str(tiny), "--data", str(bad), "--max-steps", "1",
                            "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "bad.jsonl:2" in err and "Traceback" not in err
    # DPO needs preference records: an SFT file is refused at its first line
    good_sft = _write(tmp_path / "s.jsonl", [{"prompt": "a", "completion": "b"}])
    code, _, err = run_cli(["train", "dpo", "--model", str(tiny), "--data", str(good_sft), "--max-steps", "1",
                            "--out", str(tmp_path / "y")], capsys)
    assert code == 2 and "s.jsonl:1" in err
    code, _, err = run_cli(["train", "sft", "--model", str(tmp_path / "nomodel"), "--data", str(good_sft)], capsys)
    assert code == 2 and "no Hugging Face model" in err


def test_harvest_cli_writes_trl_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from thinktwice.eval.store import RunStore
    from thinktwice.tasks.arith import ArithTask
    from thinktwice.types import Candidate, Decision, Sample, Usage

    probs = list(ArithTask(steps=2).load("train", limit=1))
    g = probs[0].gold
    with RunStore(tmp_path / "runs.db") as st:
        rid = st.create_run(kind="eval", config={"split": "train"}, task="arith", model="m0")
        st.put_problems(rid, probs)
        cands = (Candidate(Sample(text=f"1+1=2.\n#### {g}"), g), Candidate(Sample(text="1+1=3.\n#### 3"), "3"))
        st.put_decision(rid, probs[0].id, Decision(g, None, cands, 0, Usage()), True, candidate_correct=[True, False])
    for fmt, key in (("sft", "completion"), ("dpo", "chosen")):
        dest = tmp_path / f"{fmt}.jsonl"
        code, out, err = run_cli(["harvest", "--run", str(rid), "--format", fmt, "--out", str(dest), "--store",
                                  str(tmp_path / "runs.db")], capsys)
        assert code == 0, err
        assert _last_json(out)["records"] == 1
        [rec] = read_jsonl(dest)
        assert key in rec and rec["meta"]["run"] == rid
    code, _, err = run_cli(["harvest", "--run", "99", "--format", "sft", "--out", str(tmp_path / "z.jsonl"),
                            "--store", str(tmp_path / "runs.db")], capsys)
    assert code == 2 and "no run 99" in err


def test_gradient_checkpointing_can_be_turned_off(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from trl import SFTTrainer

    seen: list[bool] = []
    real_init = SFTTrainer.__init__

    def spy(self, *a, **kw):  # type: ignore[no-untyped-def]
        seen.append(kw["args"].gradient_checkpointing)
        real_init(self, *a, **kw)

    monkeypatch.setattr(SFTTrainer, "__init__", spy)
    data = _write(tmp_path / "s.jsonl", [{"prompt": f"{i}+1?", "completion": f" {i + 1}"} for i in range(4)])
    for flag, want in (([], True), (["--no-gradient-checkpointing"], False)):
        code, out, err = run_cli(["train", "sft", "--model", str(tiny), "--data", str(data), "--out",
                                  str(tmp_path / f"o{want}"), "--max-steps", "1", "--batch-size", "2", *flag], capsys)
        assert code == 0, err
        assert _last_json(out)["steps"] == 1
    assert seen == [True, False]
