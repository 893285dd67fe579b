import json

import pytest

from thinktwice.cli import main


def run(args, capsys):
    code = 0
    try:
        main(args)
    except SystemExit as e:
        code = e.code or 0
    return code, capsys.readouterr()


def test_processbench_command_with_trivial_baselines(tmp_path, capsys):
    code, cap = run(["critic", "processbench", "--subset", "gsm8k", "--limit", "6", "--backend", "scripted",
                     "-B", 'replies=["Earliest error: none"]', "-B", "cycle=true", "--store", str(tmp_path / "r.db"),
                     "--prompt", "thinktwice", "--json"], capsys)
    assert code == 0, cap.err
    data = json.loads(cap.out)
    names = [r["name"] for r in data["rows"]]
    assert names == ["critic", "always no-error", "always step-0"]
    # a critic that always says "none" is exactly the trivial no-error baseline
    assert data["rows"][0]["metrics"] == data["rows"][1]["metrics"]
    assert data["usage"]["calls"] == 6 and data["prompt"] == "thinktwice"


def test_processbench_defaults_to_the_released_prompt_and_format(tmp_path, capsys):
    from thinktwice.eval.store import RunStore

    db = tmp_path / "r.db"
    args = ["critic", "processbench", "--subset", "gsm8k", "--limit", "4", "--backend", "scripted", "-B", "cycle=true",
            "--store", str(db), "--json"]
    code, cap = run([*args, "-B", 'replies=["All paragraphs are right. \\\\boxed{-1}"]'], capsys)
    assert code == 0, cap.err
    data = json.loads(cap.out)
    assert data["prompt"] == "official" and data["rows"][0]["metrics"] == data["rows"][1]["metrics"]
    # the released format is a boxed index: our "Earliest error: none" line is not an answer there
    code, cap = run([*args, "-B", 'replies=["Earliest error: none"]'], capsys)
    assert code == 0, cap.err
    data = json.loads(cap.out)
    assert data["rows"][0]["confusion"] == {"unparsed": 4} and data["rows"][0]["metrics"]["f1"] == 0.0
    with RunStore(db, readonly=True) as st:
        run_info = st.get_run(data["run"])
        assert run_info.config["prompt"] == "official" and run_info.task_version == "processbench-official-1"
        assert "<paragraph_0>" not in st.samples(data["run"])[0].sample.text  # replies stored, not prompts
    code, cap = run([*args, "--prompt", "mine", "-B", 'replies=["x"]'], capsys)
    assert code == 2 and "official, thinktwice" in cap.err


def test_closed_loop_command_prints_flips_and_matched_sc(tmp_path, capsys):
    code, cap = run(["critic", "closed", "--task", "gsm8k", "--limit", "3", "--backend", "scripted",
                     "-B", 'replies=["The answer is 18.", "The solution is Correct. The first error step number: -1"]',
                     "-B", "cycle=true", "--store", str(tmp_path / "r.db"), "--json"], capsys)
    assert code == 0, cap.err
    data = json.loads(cap.out)
    # golds 18, 3, 70000: the initial answer 18 is right once; "Correct" verdicts keep every answer
    assert data["accuracy_by_round"] == [pytest.approx(1 / 3)] * 2 and data["i_to_c"] == [0.0]
    assert data["unchanged"] == [1.0] and data["matched_sc"]["k"] >= 1 and data["paired"] == 3


def test_open_loop_needs_labelled_samples(tmp_path, capsys):
    db = tmp_path / "r.db"
    code, cap = run(["eval", "--task", "gsm8k", "--limit", "3", "-n", "2", "--backend", "scripted",
                     "-B", 'replies=["The answer is 18.", "#### 5"]', "-B", "cycle=true", "--store", str(db)], capsys)
    assert code == 0
    code, cap = run(["critic", "open", "--run", "1", "--backend", "scripted",
                     "-B", 'replies=["Verdict: incorrect", "Verdict: correct"]', "-B", "cycle=true",
                     "--store", str(db)], capsys)
    assert code == 0, cap.err
    assert "F1 (wrong)" in cap.out and "cross" in cap.out


@pytest.mark.parametrize("sub", [["processbench"], ["open", "--run", "1"], ["closed"]])
def test_critic_commands_refuse_a_non_positive_limit(sub, capsys):
    from thinktwice.cli import main

    try:
        main(["critic", *sub, "--limit", "-1", "--backend", "scripted"])
    except SystemExit as e:
        code = e.code
    assert code == 2 and "--limit" in capsys.readouterr().err
