"""STaR on the organism (shipped checkpoint, a few problems), organism fine-tuning and DPO."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

from thinktwice.errors import ConfigError
from thinktwice.organism.checkpoint import load
from thinktwice.organism.generate import generate
from thinktwice.organism.train import finetune, prompt_ids
from thinktwice.train.organism_dpo import _batch_logps, dpo
from thinktwice.train.star import StarConfig, _problems, plot_bstar, run_star


@pytest.fixture(scope="module")
def base():  # type: ignore[no-untyped-def]
    import torch

    torch.set_num_threads(1)
    return load()


def test_finetune_learns_the_given_completion_and_leaves_the_original(base) -> None:  # type: ignore[no-untyped-def]
    q = _problems(StarConfig(), "train", 1)[0].question
    target = "1+1=2.\n#### 2"  # a fixed (wrong-for-this-question) completion the model would not write
    before = [p.detach().clone() for p in base.model.parameters()]
    tuned, summ = finetune(base, [(q, target)], steps=25, lr=2e-3, batch_size=1, warmup=2)
    got = generate(tuned.model, tuned.tokenizer, prompt_ids(tuned.tokenizer, q), 1, max_tokens=40, stats=False)[0]
    assert got.text == target
    assert all((a == b.detach()).all() for a, b in zip(before, base.model.parameters(), strict=True))
    assert summ["steps"] == 25 and tuned.meta["finetunes"][-1]["pairs"] == 1
    with pytest.raises(ConfigError):
        finetune(base, [], steps=1)


def test_dpo_raises_the_chosen_over_the_rejected(base) -> None:  # type: ignore[no-untyped-def]
    ps = _problems(StarConfig(), "train", 3)
    triples = [(p.question, p.solution(), p.solution().rsplit("#### ", 1)[0] + f"#### {p.answer + 1}") for p in ps]

    def margin(ck) -> float:  # type: ignore[no-untyped-def]
        items = [(q, c) for q, c, _ in triples] + [(q, r) for q, _, r in triples]
        lp = _batch_logps(ck.model, ck.tokenizer, items, "cpu").detach()
        return float((lp[:3] - lp[3:]).mean())

    tuned, summ = dpo(base, triples, steps=6, lr=1e-4, batch_size=3)
    assert margin(tuned) > margin(base)
    assert summ["pairs"] == 3 and summ["loss"] == summ["loss"]  # finite


def test_star_iterations_log_bstar_and_write_provenance(tmp_path: Path) -> None:
    cfg = StarConfig(iterations=2, k=3, problems=3, eval_problems=3, steps=2, batch_size=2, control=True,
                     restart="base")
    res = run_star(cfg, None, tmp_path)
    assert [r["iteration"] for r in res.iterations] == [1, 2] and len(res.control) == 2
    r1 = res.iterations[0]
    assert r1["source_model"].startswith("organism-small") and res.iterations[1]["source_model"] == "star-iter1"
    b = r1["bstar"]
    assert 0 <= b["exploitation"] <= 1 and 0 <= b["balance"] <= 1 and b["samples"] == 9
    saved = json.loads((tmp_path / "star.json").read_text())
    assert saved["base_accuracy"] == res.base_accuracy and saved["config"]["restart"] == "base"
    assert (tmp_path / "iter1.pt").is_file() and load(tmp_path / "iter1.pt").meta["star"]["iteration"] == 1
    lines = [json.loads(x) for x in (tmp_path / "iter1.jsonl").read_text().splitlines()]
    assert len(lines) == r1["kept"]
    for rec in lines:
        assert rec["meta"]["split"] == "train" and rec["meta"]["iteration"] == 1
        assert rec["prompt"] in {p.question for p in res.train_problems}
    test_qs = {p.question for p in _problems(cfg, "test", 3)}
    assert not test_qs & {p.question for p in res.train_problems}
    png = plot_bstar(res, tmp_path / "b.png")
    assert png.stat().st_size > 1000


def test_adapt_picks_from_the_grid_and_verify_steps_keeps_only_valid_chains(tmp_path: Path) -> None:
    cfg = StarConfig(iterations=1, k=3, problems=3, eval_problems=2, steps=1, batch_size=1, adapt=True,
                     adapt_problems=2, temperatures=(0.5, 1.0), verify_steps=True)
    res = run_star(cfg, None, tmp_path)
    rec = res.iterations[0]
    grid = rec["adapt_grid"]
    assert {g["temperature"] for g in grid} == {0.5, 1.0} and {g["threshold"] for g in grid} == {1.5}
    best = max(g["balance"] for g in grid)
    assert rec["temperature"] in {g["temperature"] for g in grid if g["balance"] == best}
    assert rec["filter"] == "answer+steps" and rec["kept_with_bad_steps"] == 0
    if rec["kept"]:
        lines = [json.loads(x) for x in (tmp_path / "iter1.jsonl").read_text().splitlines()]
        assert all(r["meta"]["steps_valid"] for r in lines)


def test_star_config_is_validated() -> None:
    with pytest.raises(ConfigError):
        StarConfig(restart="sometimes")
    with pytest.raises(ConfigError):
        StarConfig(k=0)
    assert StarConfig(verify_steps=True).threshold == 1.5
    with pytest.raises(ConfigError):
        StarConfig(control_gold="more")


def test_stream_control_uses_fresh_gold_problems() -> None:
    from thinktwice.train.star import _gold_pairs, _stream_pairs

    cfg = StarConfig()
    d = _problems(cfg, "train", 20)
    fresh = _stream_pairs(cfg, 30, 1, {p.question for p in d})
    assert len(fresh) == 30 and not {q for q, _ in fresh} & {p.question for p in d}
    assert all("\n#### " in c for _, c in fresh)
    assert len(_gold_pairs(d, "story")) == 20 and len(_gold_pairs(d, "all")) >= 20


def test_train_star_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from thinktwice.cli import main

    def run(args: list[str]) -> tuple[int, str, str]:
        code = 0
        try:
            main(args)
        except SystemExit as e:
            code = int(e.code or 0)
        cap = capsys.readouterr()
        return code, cap.out, cap.err

    code, out, err = run(["train", "star", "--iterations", "1", "--k", "2", "--problems", "2", "--eval-problems", "2",
                          "--steps", "1", "--batch-size", "1", "--out", str(tmp_path)])
    assert code == 0, err
    res = json.loads(out)
    assert res["config"]["restart"] == "base" and len(res["iterations"]) == 1
    assert (tmp_path / "bstar.png").is_file() and (tmp_path / "star.json").is_file()
    assert res["loop"] == "STaR without rationalization" and "STaR without rationalization" in err
    assert res["usage"]["sample"]["calls"] == 2 and "rationalize" not in res["usage"]
    code, out, err = run(["train", "star", "--iterations", "1", "--k", "2", "--problems", "2", "--eval-problems", "2",
                          "--steps", "1", "--batch-size", "1", "--rationalize", "--out", str(tmp_path / "r")])
    assert code == 0, err
    res = json.loads(out)
    assert res["loop"] == "STaR" and res["config"]["rationalize"] is True and "rationalize" in res["usage"]
    code, _, err = run(["train", "star", "--task", "gsm8k", "--out", str(tmp_path)])
    assert code == 2 and "arith" in err


def test_dev_set_is_train_split_disjoint_from_sampled_and_test_problems(tmp_path: Path) -> None:
    from thinktwice.organism.arith import split_of
    from thinktwice.train.star import dev_problems

    cfg = StarConfig(iterations=1, k=2, problems=3, eval_problems=2, dev_problems=4, steps=1, batch_size=1)
    train = _problems(cfg, "train", 40)
    dev = dev_problems(StarConfig(dev_problems=30), {p.question for p in train})
    assert len(dev) == 30 and all(split_of(p.question) == "train" for p in dev)
    assert not {p.question for p in dev} & {p.question for p in train}
    res = run_star(cfg, None, tmp_path)
    assert len(res.dev_problems) == 4 and res.base_dev_accuracy is not None
    assert not {p.question for p in res.dev_problems} & {p.question for p in res.train_problems}
    assert 0 <= res.iterations[0]["dev_accuracy"] <= 1
    saved = json.loads((tmp_path / "star.json").read_text())
    assert saved["base_dev_accuracy"] == res.base_dev_accuracy and saved["config"]["dev_problems"] == 4
    with pytest.raises(ConfigError):
        StarConfig(dev_problems=-1)


def _timeless(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if not k.endswith("seconds") and k != "checkpoint"}


def test_a_seed_repeats_to_the_digit_with_deterministic_algorithms(tmp_path: Path) -> None:
    import torch

    from thinktwice.train.bstar import Scored

    cfg = StarConfig(iterations=2, k=3, problems=3, eval_problems=3, steps=3, batch_size=2, control=True,
                     control_gold="stream", seed=3)
    inside: list[bool] = []
    before = torch.are_deterministic_algorithms_enabled()
    a = run_star(cfg, None, None, on_iteration=lambda r: inside.append(torch.are_deterministic_algorithms_enabled()))
    b = run_star(cfg, None, None)
    assert inside == [True, True] and torch.are_deterministic_algorithms_enabled() == before
    assert [_timeless(r) for r in a.iterations] == [_timeless(r) for r in b.iterations]
    assert [_timeless(c) for c in a.control] == [_timeless(c) for c in b.control]
    assert a.samples == b.samples and all(isinstance(s, Scored) for g in a.samples[1] for s in g)
    num = a.to_dict()["numerics"]
    assert num["threads"] == 1 and num["deterministic"] is True and num["torch"] == torch.__version__
    assert num["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and num["cpu"]


def test_rationalized_examples_train_without_the_hint_and_are_billed(  # type: ignore[no-untyped-def]
        tmp_path: Path, monkeypatch) -> None:
    import thinktwice.organism.train as otrain
    from thinktwice.train import star
    from thinktwice.train.bstar import Scored
    from thinktwice.types import Usage

    calls: list[list[str]] = []

    def fake_sample(ckpt, questions, golds, k, temperature, *, seeds, max_tokens):  # type: ignore[no-untyped-def]
        calls.append(list(questions))
        groups = []
        for j, (q, g) in enumerate(zip(questions, golds)):
            hinted = "The total is" in q
            right = hinted or j % 2 == 0  # unhinted: every other problem fails
            text = f"0+{g}={g}.\n#### {g}" if right else "1+1=2.\n#### 2"
            groups.append([Scored(text, str(g) if right else "2", right, True) for _ in range(k)])
        n = len(questions)
        return groups, Usage(calls=n, prompt_tokens=10 * n, completion_tokens=7 * k * n)

    trained: list[list[tuple[str, str]]] = []
    real_finetune = otrain.finetune

    def spy(ckpt, pairs, **kw):  # type: ignore[no-untyped-def]
        trained.append(list(pairs))
        return real_finetune(ckpt, pairs, **kw)

    monkeypatch.setattr(star, "_sample", fake_sample)
    monkeypatch.setattr(otrain, "finetune", spy)
    cfg = StarConfig(iterations=1, k=2, problems=4, eval_problems=2, steps=1, batch_size=1, rationalize=True)
    res = run_star(cfg, None, tmp_path)
    rec = res.iterations[0]
    plain = [p.question for p in res.train_problems]
    # problems 1 and 3 failed; only they were asked again, with the gold answer as a hint
    assert calls[1] == [star.hinted_question(plain[i], res.train_problems[i].answer) for i in (1, 3)]
    assert rec["rationalize_problems"] == 2 and rec["rationalized_problems"] == 2 and rec["rationalized"] == 2
    (pairs,) = trained
    assert len(pairs) == rec["kept"] == 4 and {q for q, _ in pairs} == set(plain)
    assert not any("The total is" in q for q, _ in pairs)
    lines = [json.loads(x) for x in (tmp_path / "iter1.jsonl").read_text().splitlines()]
    hinted = [ln for ln in lines if ln["meta"]["hinted"]]
    assert [ln["prompt"] for ln in hinted] == [plain[1], plain[3]]
    assert all(ln["meta"]["origin"] == "rationalization" and ln["meta"]["loop"] == "STaR" for ln in hinted)
    # the hinted calls are billed next to the plain sampling, per iteration and in the total
    assert rec["usage"]["rationalize"] == {**Usage(2, 20, 0, 28).to_dict()}
    assert res.usage["total"] == Usage(6, 60, 0, 84) and res.to_dict()["usage"]["rationalize"]["calls"] == 2
    assert json.loads((tmp_path / "star.json").read_text())["loop"] == "STaR"


def test_without_rationalization_the_loop_says_so() -> None:
    from thinktwice.train.star import hinted_question, loop_name

    assert StarConfig().name == loop_name(False) == "STaR without rationalization"
    assert StarConfig(rationalize=True).name == "STaR"
    from thinktwice.organism.train import make_tokenizer

    tok = make_tokenizer()
    hint = hinted_question("Ava has 1 pens. How many pens does Ava have now?", 9)
    # every word of the hint is one of the organism's own tokens, not spelled letter by letter
    assert len(tok.encode(" The total is")) == 3 and hint.endswith(" The total is 9.")
