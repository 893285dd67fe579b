"""The --ray options without a cluster: a bare --ray parses as "local", bad values are one-line errors,
shards are contiguous and complete."""

import pytest

from thinktwice.cli import main
from thinktwice.errors import ConfigError
from thinktwice.eval.distributed import RayConfig, shard
from thinktwice.types import Problem


def _run(args, capsys):
    try:
        main(args)
    except SystemExit as e:
        return e.code or 0, capsys.readouterr().err
    return 0, capsys.readouterr().err


@pytest.mark.parametrize("cmd", [["eval", "--task", "gsm8k"], ["sample", "--task", "gsm8k"]])
def test_bare_ray_flag_parses_and_bad_shards_is_a_one_line_error(cmd, tmp_path, capsys):
    code, err = _run([*cmd, "--backend", "scripted", "--store", str(tmp_path / "r.db"), "--ray", "--shards", "0"],
                     capsys)
    assert code == 2
    assert "--shards must be >= 1" in err and "Traceback" not in err
    assert "requires an argument" not in err


def test_ray_config_validates():
    with pytest.raises(ConfigError):
        RayConfig(num_cpus=0, num_gpus=0)
    with pytest.raises(ConfigError):
        RayConfig(max_retries=-1)
    assert RayConfig(address="auto", num_gpus=1).num_gpus == 1


def test_shards_are_contiguous_and_complete():
    problems = [Problem(f"p{i}", "q", "1") for i in range(10)]
    parts = shard(problems, 4)
    assert [len(p) for p in parts] == [3, 3, 2, 2]
    assert [p for part in parts for p in part] == problems
    assert shard(problems[:2], 8) == [[problems[0]], [problems[1]]]
