"""`thinktwice compare` on the scripted backend: strategies next to their matched SC baselines."""

from __future__ import annotations

import json

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
