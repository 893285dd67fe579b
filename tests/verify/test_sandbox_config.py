"""Choosing the isolation: bwrap or a refusal by default, weak only when asked for and then recorded;
the jail's command line, the cgroup lookup and exit-status reading, checked without running code."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thinktwice.errors import CapabilityError, ConfigError
from thinktwice.lm.meter import Meter
from thinktwice.lm.scripted import ScriptedBackend
from thinktwice.registry import tasks
from thinktwice.signals.verifier import CodeExecutionSignal
from thinktwice.tasks.base import Query
from thinktwice.tasks.code import HumanEvalTask
from thinktwice.types import Candidate, Problem, Sample
from thinktwice.verify import BwrapSupport, SandboxConfig, check_isolation, run_sandboxed
from thinktwice.verify import bwrap as bwrap_mod
from thinktwice.verify import sandbox as sandbox_mod
from thinktwice.verify.cgroup import _locate

TOY = Problem(
    "toy/0",
    "def add(a, b):\n    \"\"\"Return a + b.\"\"\"\n",
    None,
    {"entry_point": "add", "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n"},
)
GOOD = "def add(a, b):\n    return a + b\n"


@pytest.fixture
def no_bwrap(monkeypatch: pytest.MonkeyPatch) -> None:
    """This host as if bubblewrap were not installed."""
    missing = BwrapSupport(None, None, "not installed")
    monkeypatch.setattr(sandbox_mod, "bwrap_support", lambda python: missing)


def test_probe_reports_a_missing_bwrap(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    probe = bwrap_mod.bwrap_support.__wrapped__  # type: ignore[attr-defined]  (uncached)
    support = probe(os.path.realpath(sys.executable))
    assert not support.ok and "not installed" in support.reason


@pytest.mark.usefixtures("no_bwrap")
def test_without_bwrap_the_default_refuses_to_run() -> None:
    with pytest.raises(CapabilityError, match="sandbox=weak"):
        run_sandboxed("print('hi')")
    r = run_sandboxed("print('hi')", config=SandboxConfig(isolation="weak"))
    assert r.passed and r.isolation == "weak" and r.stdout.strip() == "hi"


@pytest.mark.usefixtures("no_bwrap")
def test_grading_without_bwrap_stops_instead_of_scoring_wrong() -> None:
    # a ConfigError stops the eval harness at the first problem; a False grade would not
    with pytest.raises(CapabilityError):
        HumanEvalTask().grade(GOOD, TOY)
    weak = tasks.create("humaneval", sandbox="weak")  # what -T sandbox=weak builds
    assert weak.grade(GOOD, TOY) and weak.run_tests(GOOD, TOY).isolation == "weak"


@pytest.mark.usefixtures("no_bwrap")
def test_loading_the_task_without_bwrap_refuses_before_any_sampling(tmp_path: Path) -> None:
    data = tmp_path / "he.jsonl"
    data.write_text('{"task_id": "t/0", "prompt": "def f():\\n", "entry_point": "f", "test": "pass"}\n')
    with pytest.raises(CapabilityError, match="bubblewrap"):
        HumanEvalTask(path=data).load()
    assert [p.id for p in HumanEvalTask(path=data, sandbox="weak").load()] == ["t/0"]
    check_isolation(SandboxConfig(isolation="weak"))  # nothing to check
    with pytest.raises(CapabilityError):
        check_isolation(SandboxConfig())


def test_task_records_the_isolation_in_its_version() -> None:
    assert HumanEvalTask().version == "humaneval-p1-g1"
    assert HumanEvalTask().sandbox_config().isolation == "bwrap"
    weak = HumanEvalTask(sandbox="weak", timeout_s=3, memory_mb=256)
    assert weak.version == "humaneval-p1-g1-weak-sandbox"
    assert weak.sandbox_config() == SandboxConfig(timeout_s=3, memory_mb=256, isolation="weak")
    with pytest.raises(ConfigError, match="bwrap, weak"):
        HumanEvalTask(sandbox="none")
    with pytest.raises(ConfigError):
        tasks.create("humaneval", sandbox=1)


@pytest.mark.usefixtures("no_bwrap")
async def test_code_exec_signal_follows_the_task_unless_told() -> None:
    sig = CodeExecutionSignal(timeout_s=3)
    weak_q = Query.from_task(HumanEvalTask(sandbox="weak"), TOY)
    strict_q = Query.from_task(HumanEvalTask(), TOY)
    assert sig.config_for(weak_q).isolation == "weak" and sig.config_for(strict_q).isolation == "bwrap"
    assert CodeExecutionSignal(isolation="bwrap").config_for(weak_q).isolation == "bwrap"
    with pytest.raises(ConfigError):
        CodeExecutionSignal(isolation="off")
    lm = Meter(ScriptedBackend(["unused"]))
    cands = [Candidate(Sample(f"```python\n{GOOD}```"), GOOD)]
    assert await sig.score(weak_q, cands, lm) == [1.0]
    with pytest.raises(CapabilityError):
        await sig.score(strict_q, cands, lm)


def test_jail_binds_host_paths_read_only() -> None:
    argv = bwrap_mod.bwrap_argv("/usr/bin/bwrap", "privileged", os.path.realpath(sys.executable),
                                files={"main.py": 9}, tmpfs_bytes=1 << 20, info_fd=7)
    for flag in ("--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-net", "--unshare-uts",
                 "--new-session"):
        assert flag in argv
    assert argv[-1] == "--" and argv[argv.index("--info-fd") + 1] == "7"
    assert not {"--bind", "--bind-try", "--dev-bind"} & set(argv)  # nothing of the host is writable
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    sources = [argv[i + 1] for i, a in enumerate(argv) if a in ("--ro-bind", "--ro-bind-try")]
    assert not any(s in ("/", "/etc", "/tmp", "/home", "/run") for s in sources)
    i = argv.index("--ro-bind-data")  # the program arrives by fd: no host path for the uid to reach
    assert argv[i - 2 : i + 3] == ["--perms", "0444", "--ro-bind-data", "9", f"{bwrap_mod.WORK_DIR}/main.py"]
    tmpfs = [i for i, a in enumerate(argv) if a == "--tmpfs"]
    assert [argv[i + 1] for i in tmpfs] == ["/tmp", "/dev/shm", bwrap_mod.HOME_DIR, bwrap_mod.WORK_DIR]
    assert all(argv[i - 4 : i - 2] == ["--size", str(1 << 20)] for i in tmpfs)  # each one bounded
    userns = bwrap_mod.bwrap_argv("/usr/bin/bwrap", "userns", "/usr/bin/python3", files={}, tmpfs_bytes=1)
    assert "--disable-userns" in userns and "--cap-add" not in userns


V1 = """12:pids:/job/7
4:memory:/job/7
1:name=systemd:/
0::/
"""
V1_MOUNTS = """35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""


def test_cgroup_lookup_v1_hybrid() -> None:
    found = _locate(V1, V1_MOUNTS)
    assert found is not None and found.version == 1
    assert found.dirs == {"memory": Path("/sys/fs/cgroup/memory/job/7")}  # tasks: RLIMIT_NPROC
    assert _locate(V1, V1_MOUNTS.splitlines()[1]) is None  # no memory hierarchy: no cgroup layer


def test_cgroup_lookup_v2_needs_the_controllers(tmp_path: Path) -> None:
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "cgroup.controllers").write_text("cpu io memory pids\n")
    mounts = f"30 23 0:26 /ctr {tmp_path} rw - cgroup2 cgroup2 rw\n"
    found = _locate("0::/ctr/svc\n", mounts)  # mounted at the container's root /ctr
    assert found is not None and found.version == 2 and found.dirs == {"": tmp_path / "svc"}
    (tmp_path / "svc" / "cgroup.controllers").write_text("cpu io\n")
    assert _locate("0::/ctr/svc\n", mounts) is None
    assert _locate("0::/elsewhere\n", mounts) is None


def test_exit_status_of_the_jail_is_read_as_the_program_s() -> None:
    classify = sandbox_mod._classify
    assert classify(128 + signal.SIGSEGV, False, "", bwrap=True) == "killed"
    assert classify(128 + signal.SIGXCPU, False, "", bwrap=True) == "timeout"
    assert classify(128 + signal.SIGKILL, False, "", oom=True, bwrap=True) == "memory"
    assert classify(1, False, "bwrap: Can't mount proc on /newroot/proc", bwrap=True) == "error"
    assert classify(1, False, "Traceback ...", bwrap=True) == "failed"
    assert classify(139, False, "", bwrap=False) == "failed"  # a plain exit status outside bwrap
    assert classify(0, False, "", oom=True, bwrap=True) == "passed"


@settings(deadline=None, max_examples=300)
@given(rc=st.one_of(st.none(), st.integers(-64, 300)), timed_out=st.booleans(), oom=st.booleans(),
       bwrap=st.booleans(), stderr=st.sampled_from(["", "bwrap: x", "MemoryError", "Traceback"]))
def test_only_a_clean_exit_in_time_passes(rc: int | None, timed_out: bool, oom: bool, bwrap: bool,
                                          stderr: str) -> None:
    status = sandbox_mod._classify(rc, timed_out, stderr, oom=oom, bwrap=bwrap)
    assert status in ("passed", "failed", "timeout", "memory", "error", "killed")
    assert (status == "passed") == (rc == 0 and not timed_out)


@settings(deadline=None, max_examples=200)
@given(proc=st.text(alphabet=":/,0123456789abcmemorypids\n -", max_size=80),
       mounts=st.text(alphabet=" -/0123456789cgroup2memorypidsrw,\n", max_size=160))
def test_cgroup_lookup_never_raises_on_odd_tables(proc: str, mounts: str) -> None:
    found = _locate(proc, mounts)
    assert found is None or found.version in (1, 2)
