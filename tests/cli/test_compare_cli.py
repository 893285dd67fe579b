"""`thinktwice compare` on the scripted backend: strategies next to their matched SC baselines."""

from __future__ import annotations

import json

import pytest

from typer.testing import CliRunner

from thinktwice.cli import app

SCRIPT = ["-B", 'replies=["#### 3"]', "-B", "cycle=true"]


def test_compare_matches_k_to_measured_tokens(tmp_path):
    res = CliRunner().invoke(app, ["compare", "--task", "gsm8k", "--limit", "3", "--strategies",
                                   "adaptive-consistency,esc,greedy", "--backend", "scripted", *SCRIPT, "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["strategy"]: r for r in json.loads(res.stdout[res.stdout.index("["):])}
    assert set(rows) == {"adaptive-consistency", "esc", "greedy"}
    # every sample answers 3: only the second gsm8k test problem (gold 3) is right
    for r in rows.values():
        assert r["n"] == 3 and abs(r["accuracy"] - 1 / 3) < 1e-9
        assert abs(r["matched_accuracy"] - 1 / 3) < 1e-9 and r["delta"] == 0.0
        assert r["matched_k"] == max(1, round(r["gen_tokens"] / r["tokens_per_sample"]))
    assert rows["adaptive-consistency"]["matched_k"] == 4  # the Beta rule stops after 4 agreeing samples
    assert rows["esc"]["matched_k"] == 5  # one unanimous window
    assert rows["greedy"]["matched_k"] == 1
    assert rows["adaptive-consistency"]["matched_gen_tokens"] == rows["adaptive-consistency"]["gen_tokens"]


def test_compare_table_budget_and_store(tmp_path):
    db = tmp_path / "c.db"
    res = CliRunner().invoke(app, ["compare", "--task", "gsm8k", "--limit", "2", "--strategies", "esc",
                                   "--backend", "scripted", *SCRIPT, "--budget-tokens", "4", "--store", str(db)])
    assert res.exit_code == 0, res.output
    assert "matched SC" in res.stdout and "esc" in res.stdout
    from thinktwice.eval.store import RunStore

    with RunStore(db) as st:
        (run,) = st.list_runs()
        usage = [d.usage.completion_tokens for d in st.decisions(run.id)]
    assert usage and all(u <= 4 for u in usage)


def test_compare_rejects_unknown_strategy():
    from thinktwice.cli import main

    try:
        main(["compare", "--task", "gsm8k", "--limit", "1", "--strategies", "esc,adaptive-consistncy",
              "--backend", "scripted", *SCRIPT])
    except SystemExit as e:
        assert e.code == 2
    else:
        raise AssertionError("expected exit 2")


def test_compare_offline_from_a_stored_pool(tmp_path):
    db = tmp_path / "pool.db"
    # an eval run with 8 samples per problem stores the pool
    res = CliRunner().invoke(app, ["eval", "--task", "gsm8k", "--limit", "3", "-n", "8", "--backend", "scripted",
                                   "-B", 'replies=["#### 3", "#### 18", "#### 3", "so 70000"]', "-B", "cycle=true",
                                   "--store", str(db), "--json"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["compare", "--task", "gsm8k", "--pool-run", "1", "--store", str(db),
                                   "--strategies", "self-consistency,adaptive-consistency", "--orders", "3", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["strategy"]: r for r in json.loads(res.stdout[res.stdout.index("["):])}
    sc = rows["self-consistency"]
    # SC@8 replayed against its own matched baseline SC@8 from the same orders: identical
    assert sc["matched_k"] == 8 and sc["delta"] == 0.0 and sc["accuracy"] == sc["matched_accuracy"]
    ac = rows["adaptive-consistency"]
    assert ac["matched_k"] <= 8 and ac["gen_tokens"] <= sc["gen_tokens"]
    res = CliRunner().invoke(app, ["compare", "--task", "gsm8k", "--pool-run", "1", "--store", str(db),
                                   "--strategies", "self-refine"])
    assert res.exit_code != 0


def _esc_pool(tmp_path, n_samples=10):
    """A stored pool of 3 problems: one whose samples all agree (ESC stops after 5), two whose 10
    samples hold 5 answers twice each (no window of 5 is ever unanimous: ESC reads all 10)."""
    import asyncio

    from thinktwice.eval.pool import PoolConfig, create_pool_run, draw_pool
    from thinktwice.eval.store import RunStore
    from thinktwice.lm.scripted import Reply, ScriptedBackend
    from thinktwice.tasks.gsm8k import Gsm8kTask

    data = tmp_path / "mini.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"What is {i} + {i}?", "answer": f"#### {2 * i}"})
                              for i in range(1, 4)) + "\n")

    def handler(prompt, params, index):
        i = int(prompt.text().split("What is ")[-1].split(" +")[0])
        answer = 2 * i if i == 1 else 2 * i + index % 5
        return Reply(f"So the answer is {answer}.")

    task = Gsm8kTask(path=data)
    backend = ScriptedBackend(handler=handler)
    problems = list(task.load())
    db = tmp_path / "pool.db"
    with RunStore(db) as store:
        cfg = PoolConfig(n=n_samples, batch=n_samples)
        run = create_pool_run(store, task, backend, problems, cfg, spec={"task_options": {"path": str(data)}})
        asyncio.run(draw_pool(task, backend, problems, store, run, cfg))
    return db, run, data


def test_compare_baseline_never_spends_less_than_the_strategy(tmp_path):
    db, run, data = _esc_pool(tmp_path)
    res = CliRunner().invoke(app, ["compare", "--task", "gsm8k", "-T", f"path={json.dumps(str(data))}",
                                   "--pool-run", str(run), "--store", str(db), "--strategies", "esc",
                                   "--orders", "2", "--json"])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.stdout[res.stdout.index("["):])
    t = row["tokens_per_sample"]
    assert row["gen_tokens"] == pytest.approx(25 / 3 * t)  # samples 5, 10, 10: 8.33 per problem
    # round(8.33) = 8 would spend 8 t: the mixture of SC@8 and SC@9 spends exactly the strategy's tokens
    assert row["matched_gen_tokens"] >= row["gen_tokens"] - 1e-9
    assert row["matched_gen_tokens"] == pytest.approx(row["gen_tokens"], rel=1e-9)
    assert (row["matched_k"], row["matched_capped"], row["matched_note"]) == (8, False, None)
    assert row["matched_weight"] == pytest.approx(1 / 3)
    assert row["matched_label"] == "SC@8/9 mix w=0.33"


def test_compare_marks_a_baseline_capped_at_the_pool_size(tmp_path):
    db, run, data = _esc_pool(tmp_path)
    args = ["compare", "--task", "gsm8k", "-T", f"path={json.dumps(str(data))}", "--pool-run", str(run),
            "--store", str(db), "--strategies", "esc,self-consistency", "--orders", "2", "--max-k", "6"]
    res = CliRunner().invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["strategy"]: r for r in json.loads(res.stdout[res.stdout.index("["):])}
    for r in rows.values():  # both spend more than SC@6
        assert r["matched_capped"] and r["matched_k"] == 6 and r["matched_weight"] == 0.0
        assert r["matched_gen_tokens"] < r["gen_tokens"] and "capped at the pool size" in r["matched_note"]
    res = CliRunner().invoke(app, [*args], env={"COLUMNS": "220"})
    assert res.exit_code == 0, res.output
    assert "SC@6 (capped)" in res.stdout and "spends FEWER tokens than the strategy" in res.stdout
    # the baseline's own tokens sit beside the strategy's
    line = next(x for x in res.stdout.splitlines() if x.lstrip("│ ").startswith("esc"))
    assert f"{rows['esc']['gen_tokens']:.0f}" in line and f"{rows['esc']['matched_gen_tokens']:.0f} *" in line


def test_live_compare_grows_the_pool_until_the_baseline_matches(tmp_path):
    import asyncio

    from thinktwice.cli.compare import run_compare
    from thinktwice.lm.scripted import Reply, ScriptedBackend
    from thinktwice.tasks.gsm8k import Gsm8kTask

    data = tmp_path / "mini.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"What is {i} + {i}?", "answer": f"#### {2 * i}"})
                              for i in range(1, 4)) + "\n")

    def handler(prompt, params, index):  # problem 1 always agrees; the others never fill a unanimous window
        i = int(prompt.text().split("What is ")[-1].split(" +")[0])
        return Reply(f"So the answer is {2 * i if i == 1 else 2 * i + index % 5}.")

    task = Gsm8kTask(path=data)
    rows = asyncio.run(run_compare(task, list(task.load()), ["esc"], ScriptedBackend(handler=handler), orders=2))
    (row,) = rows
    # ESC reads 5, 40 and 40 samples: 28.3 samples' worth; the baseline mixes SC@28 and SC@29
    assert row["matched_k"] == 28 and not row["matched_capped"]
    assert row["matched_gen_tokens"] == pytest.approx(row["gen_tokens"], rel=1e-9)


def test_a_problem_failing_in_one_strategy_is_left_out_of_every_row(tmp_path, monkeypatch):
    """Counting a failed problem as wrong at zero tokens would bias the accuracy and the matched budget."""
    from thinktwice.strategies.adaptive import EarlyStoppingSC

    real = EarlyStoppingSC.decide

    async def buggy(self, ctx):
        if ctx.query.problem.gold == "3":
            raise IndexError("a bug in esc")
        return await real(self, ctx)

    monkeypatch.setattr(EarlyStoppingSC, "decide", buggy)
    db = tmp_path / "c.db"
    res = CliRunner().invoke(app, ["compare", "--task", "gsm8k", "--limit", "3", "--strategies", "esc,greedy",
                                   "--backend", "scripted", *SCRIPT, "--store", str(db), "--json"])
    assert res.exit_code == 1, res.output
    rows = {r["strategy"]: r for r in json.loads(res.stdout[res.stdout.index("["):])}
    for r in rows.values():
        # the one problem the scripted replies get right (gold 3) failed in esc: it is out of both rows
        assert r["n"] == 2 and r["excluded"] == 1 and r["accuracy"] == 0.0 and r["matched_accuracy"] == 0.0
    assert rows["esc"]["failed"] == 1 and rows["greedy"]["failed"] == 0
    assert rows["esc"]["gen_tokens"] == rows["esc"]["matched_gen_tokens"] or rows["esc"]["matched_capped"]
    from thinktwice.eval.store import RunStore

    with RunStore(db) as st:
        assert {r.strategy: r.status for r in st.list_runs()} == {"esc": "completed-with-failures", "greedy": "done"}
