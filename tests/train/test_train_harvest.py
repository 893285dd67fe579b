"""Harvesting SFT, DPO and critique datasets from a run store (scripted data, no model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from thinktwice.errors import ConfigError
from thinktwice.eval.store import RunStore
from thinktwice.lm.scripted import ScriptedBackend
from thinktwice.tasks.arith import ArithTask
from thinktwice.train.formats import kind_of
from thinktwice.train.harvest import HarvestConfig, harvest, prompt_text
from thinktwice.train.rationalize import rationalize
from thinktwice.types import Candidate, Decision, Sample, TraceStep, Usage


def _cand(text: str, answer: str | None, stage: str = "sample", **scores: float) -> Candidate:
    return Candidate(Sample(text=text, model="m0"), answer, scores, stage)


def _store(tmp_path: Path, split: str = "train") -> tuple[RunStore, int, list]:
    task = ArithTask(steps=2)
    probs = list(task.load(split, limit=4))
    st = RunStore(tmp_path / "runs.db")
    rid = st.create_run(kind="eval", config={"split": split, "params": {"temperature": 0.7}}, task="arith",
                        model="m0", strategy="self-consistency", backend="scripted")
    st.put_problems(rid, probs)
    g0 = probs[0].gold
    # problem 0: two identical correct paths (spacing differs), one other correct path, two wrong ones
    cands = [_cand(f"1+2=3.  3+4={g0}.\n#### {g0}", g0), _cand(f"1+2=3. 3+4={g0}.\n####  {g0}", g0),
             _cand(f"2+1=3. 3+4={g0}.\n#### {g0}", g0), _cand("1+2=4. 4+4=8.\n#### 8", "8"),
             _cand("1+2=5.\n#### 5", "5")]
    st.put_decision(rid, probs[0].id, Decision(g0, 0.6, tuple(cands), 0, Usage()), True,
                    candidate_correct=[c.answer == g0 for c in cands])
    # problem 1: self-refine: wrong first answer, feedback, correct revision (i->c)
    g1 = probs[1].gold
    cands = [_cand("5+5=11.\n#### 11", "11"), _cand(f"5+5=10. fixed\n#### {g1}", g1, stage="refine-1")]
    trace = (TraceStep("feedback", {"round": 1, "approved": False, "text": "5+5 is 10, not 11."}),)
    st.put_decision(rid, probs[1].id, Decision(g1, None, tuple(cands), 1, Usage(), trace=trace), True,
                    candidate_correct=[False, True])
    # problem 2: tree search paths with values: two branches after a shared first step
    g2 = probs[2].gold
    cands = [_cand(f"Step A\nStep good\n#### {g2}", g2, stage="path", **{"path-value": 0.9, "q": 0.5}),
             _cand("Step A\nStep bad\n#### 0", "0", stage="path", **{"path-value": 0.2, "q": 0.1})]
    st.put_decision(rid, probs[2].id, Decision(g2, None, tuple(cands), 0, Usage()), True,
                    candidate_correct=[True, False])
    # problem 3: critique-correct, wrong then corrected by the critique
    g3 = probs[3].gold
    cands = [_cand("9-1=7.\n#### 7", "7", stage="solve"),
             _cand(f"Step 1 is wrong. The solution is incorrect.\nCorrected solution: 9-1=8.\n#### {g3}", g3,
                   stage="critique-1")]
    st.put_decision(rid, probs[3].id, Decision(g3, None, tuple(cands), 1, Usage()), True,
                    candidate_correct=[False, True])
    return st, rid, probs


def test_sft_keeps_distinct_correct_paths_with_provenance(tmp_path: Path) -> None:
    st, rid, probs = _store(tmp_path)
    recs = harvest(st, rid, HarvestConfig(format="sft"))
    p0 = [r for r in recs if r["meta"]["problem_id"] == probs[0].id]
    assert len(p0) == 2  # the whitespace-only duplicate is merged; wrong ones are dropped
    assert all(kind_of(r) == "sft" and r["prompt"].startswith(probs[0].question) for r in p0)
    m = p0[0]["meta"]
    assert (m["run"], m["source_model"], m["strategy"], m["temperature"], m["split"]) == (rid, "m0", "self-consistency",
                                                                                           0.7, "train")
    assert not any("critique" in r["meta"]["stage"] for r in recs)  # critique texts are not solutions
    no_dedup = harvest(st, rid, HarvestConfig(format="sft", dedup=False))
    assert len([r for r in no_dedup if r["meta"]["problem_id"] == probs[0].id]) == 3
    conv = harvest(st, rid, HarvestConfig(format="sft", conversational=True))
    assert all(kind_of(r) == "messages" and r["messages"][1]["role"] == "assistant" for r in conv)


def test_verify_steps_drops_correct_answers_with_wrong_equations(tmp_path: Path) -> None:
    st, rid, _ = _store(tmp_path)
    recs = harvest(st, rid, HarvestConfig(format="sft", verify_steps=True))
    # refine-1's "5+5=10" is right but ends in a different answer than the equation; step ones are kept only if valid
    texts = [r["completion"] for r in recs]
    assert all("Step" not in t for t in texts)  # no equations: cannot be verified
    assert len(recs) < len(harvest(st, rid, HarvestConfig(format="sft")))


def test_dpo_pairs_from_samples_flips_and_search(tmp_path: Path) -> None:
    st, rid, probs = _store(tmp_path)
    recs = harvest(st, rid, HarvestConfig(format="dpo", pairs_per_problem=1))
    assert all(kind_of(r) == "dpo" for r in recs)
    p0 = [r for r in recs if r["meta"]["problem_id"] == probs[0].id and r["meta"]["source"] == "correct-vs-incorrect"]
    assert len(p0) == 1 and f"#### {probs[0].gold}" in p0[0]["chosen"]
    assert "#### 8" in p0[0]["rejected"] or "#### 5" in p0[0]["rejected"]
    flips = {r["meta"]["problem_id"]: r for r in recs if r["meta"]["source"] == "self-correction i->c"}
    assert set(flips) == {probs[1].id, probs[3].id}
    assert "fixed" in flips[probs[1].id]["chosen"] and "11" in flips[probs[1].id]["rejected"]
    assert flips[probs[3].id]["chosen"].startswith("9-1=8.")  # the critique's corrected solution, not its critique
    [step] = [r for r in recs if r["meta"]["source"] == "tree-search step"]
    assert step["prompt"].endswith("Step A\n") and step["chosen"] == "Step good" and step["rejected"] == "Step bad"
    assert step["meta"]["values"] == [0.9, 0.2]
    only = harvest(st, rid, HarvestConfig(format="dpo", pair_sources=("flips",)))
    assert len(only) == 2 and all(r["meta"]["source"].startswith("self-correction") for r in only)


def test_critique_records_from_refine_and_critique_correct(tmp_path: Path) -> None:
    st, rid, probs = _store(tmp_path)
    recs = harvest(st, rid, HarvestConfig(format="critique"))
    assert len(recs) == 2 and all(kind_of(r) == "messages" for r in recs)
    refine = next(r for r in recs if r["meta"]["problem_id"] == probs[1].id)
    assert "5+5=11" in refine["messages"][0]["content"]
    assert "not 11" in refine["messages"][1]["content"] and "fixed" in refine["messages"][1]["content"]


def test_test_split_is_refused_unless_allowed(tmp_path: Path) -> None:
    st, rid, _ = _store(tmp_path, split="test")
    with pytest.raises(ConfigError, match="test split"):
        harvest(st, rid, HarvestConfig(format="sft"))
    recs = harvest(st, rid, HarvestConfig(format="sft", allow_test=True))
    assert recs and all(r["meta"]["split"] == "test" for r in recs)


def _unsolved_store(tmp_path: Path) -> tuple[RunStore, int, list]:
    task = ArithTask(steps=2)
    probs = list(task.load("train", limit=2))
    st = RunStore(tmp_path / "r.db")
    rid = st.create_run(kind="eval", config={"split": "train"}, task="arith", model="m0")
    st.put_problems(rid, probs)
    st.put_decision(rid, probs[0].id, Decision(probs[0].gold, None, (_cand(f"#### {probs[0].gold}", probs[0].gold),),
                                               0, Usage()), True, candidate_correct=[True])
    st.put_decision(rid, probs[1].id, Decision("0", None, (_cand("#### 0", "0"),), 0, Usage()), False,
                    candidate_correct=[False])
    return st, rid, probs


async def test_rationalization_hints_gold_but_stores_the_plain_prompt(tmp_path: Path) -> None:
    st, rid, probs = _unsolved_store(tmp_path)
    g = probs[1].gold
    be = ScriptedBackend(rules={"Hint": [f"1+1=2. the hint says {g}\n#### {g}", f"2+2=4.\n#### {g}", "#### 0",
                                         f"2+2=4.\n####  {g}"]})
    res = await rationalize(st, rid, be, HarvestConfig(format="sft"), k=4)
    recs = res.records
    assert [r["completion"] for r in recs] == [f"2+2=4.\n#### {g}"]  # hint-mentioning, wrong and duplicate dropped
    assert "Hint" not in recs[0]["prompt"] and recs[0]["meta"]["source"] == "rationalization"
    assert recs[0]["prompt"] == prompt_text(ArithTask(steps=2), probs[1])  # the plain prompt, exactly
    assert len(be.calls) == 1 and "Hint" in be.calls[0][0].text()  # only the unsolved problem was sampled
    assert json.dumps(recs)  # serialisable


async def test_rationalization_bills_every_hinted_call_and_records_it(tmp_path: Path) -> None:
    st, rid, probs = _unsolved_store(tmp_path)
    g = probs[1].gold
    replies = [f"2+2=4.\n#### {g}", "#### 0", "3+3=6. 6+1=7. 7-1=6. and so on\n#### 6"]
    be = ScriptedBackend(rules={"Hint": replies})
    res = await rationalize(st, rid, be, HarvestConfig(format="sft"), k=3)
    (prompt, _, _), = be.calls
    from thinktwice.lm.scripted import tokenize

    want_gen = sum(len(tokenize(t)) for t in replies)  # the two discarded samples are billed too
    assert res.usage.calls == 1 and res.usage.completion_tokens == want_gen
    assert res.usage.prompt_tokens == be.count_tokens(prompt) > 0
    assert res.problems == 1 and res.samples == 3 and len(res.records) == 1
    # the spend is on record as a run of its own, next to the run it came from
    info = st.get_run(res.run_id)
    assert info.kind == "rationalize" and info.config["source_run"] == rid and info.status == "done"
    stored = st.decisions(res.run_id)
    assert [d.problem_id for d in stored] == [probs[1].id]
    assert Usage.total([d.usage for d in stored]) == res.usage
    assert len(st.samples(res.run_id)) == 3 and res.records[0]["meta"]["rationalize_run"] == res.run_id
    nothing = await rationalize(st, res.run_id, ScriptedBackend(["#### 0"]), HarvestConfig(), record=False)
    assert nothing.records == [] and nothing.run_id is None


def test_harvest_cli_prints_the_rationalization_cost(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from thinktwice.cli import main

    st, rid, probs = _unsolved_store(tmp_path)
    st.close()
    g = probs[1].gold
    args = ["harvest", "--run", str(rid), "--out", str(tmp_path / "sft.jsonl"), "--store", str(tmp_path / "r.db"),
            "--rationalize", "--backend", "scripted", "-B", f'replies=["2+2=4.\\n#### {g}", "#### 0"]',
            "-B", "cycle=true", "--k", "2"]
    try:
        main(args)
    except SystemExit as e:
        assert not e.code, capsys.readouterr().err
    data = json.loads(capsys.readouterr().out)
    rat = data["rationalize"]
    assert rat["problems"] == 1 and rat["samples"] == 2 and rat["usage"]["calls"] == 1
    assert rat["usage"]["completion_tokens"] > 0 and data["sources"] == {"sample": 1, "rationalization": 1}
    with RunStore(tmp_path / "r.db", readonly=True) as st2:
        assert Usage.total([d.usage for d in st2.decisions(rat["run"])]).to_dict() == rat["usage"]


def test_temperature_falls_back_to_the_strategy_default(tmp_path: Path) -> None:
    from thinktwice.train.harvest import run_temperature

    st = RunStore(tmp_path / "t.db")
    a = st.create_run(kind="eval", config={"strategy_options": {"n": 4, "temperature": 0.3}}, strategy="self-consistency")
    b = st.create_run(kind="eval", config={"strategy_options": {"n": 4}}, strategy="self-consistency")
    c = st.create_run(kind="eval", config={}, strategy=None)
    assert run_temperature(st.get_run(a)) == 0.3
    from thinktwice.strategies import create_strategy

    assert run_temperature(st.get_run(b)) == create_strategy("self-consistency", n=4).temperature
    assert run_temperature(st.get_run(c)) is None
