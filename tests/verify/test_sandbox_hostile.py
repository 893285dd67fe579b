"""Hostile snippets must be contained by the sandbox: reported as failures, host untouched.

Each test runs under bubblewrap and under the opt-in weak mode (the layers it has are enough for
these); the escapes only bubblewrap contains are in test_sandbox_escapes.py.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from thinktwice.errors import ConfigError
from thinktwice.verify import SandboxConfig, SandboxResult, bwrap_support, run_sandboxed
from thinktwice.verify.hostproc import pids_of_uid as _pids_of_uid

IS_ROOT = os.geteuid() == 0
SUPPORT = bwrap_support(os.path.realpath(sys.executable))
NO_BWRAP = f"bubblewrap cannot run here ({SUPPORT.reason}); CI installs it (apt-get install bubblewrap)"


@pytest.fixture(params=["bwrap", "weak"])
def iso(request: pytest.FixtureRequest) -> str:
    if request.param == "bwrap" and not SUPPORT.ok:
        pytest.skip(NO_BWRAP)
    return str(request.param)


def run(code: str, iso: str, **limits: object) -> SandboxResult:
    r = run_sandboxed(code, config=SandboxConfig(isolation=iso, **limits))  # type: ignore[arg-type]
    assert r.isolation == iso
    return r


def _live_in_group(pgid: int) -> list[int]:
    """Non-zombie processes still in process group ``pgid`` (read from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            out.append(int(entry))
    return out


def _assert_no_leftovers(r: SandboxResult) -> None:
    assert r.pgid is not None
    assert _live_in_group(r.pgid) == []
    if r.uid is not None:
        assert _pids_of_uid(r.uid) == []


def test_benign_code_passes(iso: str) -> None:
    r = run("import json, math\nprint(json.dumps({'x': math.sqrt(4)}))", iso)
    assert r.passed and r.status == "passed"
    assert r.stdout.strip() == '{"x": 2.0}'


def test_failing_assertion_is_failed(iso: str) -> None:
    r = run("assert 1 == 2", iso)
    assert not r.passed and r.status == "failed"
    assert "AssertionError" in r.stderr


def test_infinite_loop_times_out(iso: str) -> None:
    r = run("while True:\n    pass", iso, timeout_s=1)
    assert r.status == "timeout" and not r.passed
    _assert_no_leftovers(r)


def test_sleeping_child_process_is_killed(iso: str) -> None:
    code = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n"
    r = run(code, iso, timeout_s=2)
    _assert_no_leftovers(r)


def test_fork_bomb_is_contained(iso: str) -> None:
    r = run("import os\nwhile True:\n    os.fork()", iso, timeout_s=3, max_procs=16)
    assert not r.passed
    assert r.status in ("failed", "timeout", "killed")
    _assert_no_leftovers(r)


def test_huge_allocation_is_memory(iso: str) -> None:
    r = run("x = bytearray(10 * 1024 ** 3)", iso, memory_mb=256)
    assert not r.passed and r.status == "memory"


def test_write_outside_tmp_is_refused(tmp_path: Path, iso: str) -> None:
    canary = tmp_path / "canary.txt"
    canary.write_text("original")
    absent = tmp_path / "absent.txt"
    code = f"open({str(canary)!r}, 'w').write('pwned')\n"
    r = run(code, iso)
    assert not r.passed
    r2 = run(f"import os\nfd = os.open({str(absent)!r}, os.O_CREAT | os.O_WRONLY)\n", iso)
    assert not r2.passed
    assert canary.read_text() == "original"
    assert not absent.exists()


def test_deleting_outside_files_is_refused(tmp_path: Path, iso: str) -> None:
    canary = tmp_path / "keep.txt"
    canary.write_text("keep")
    for code in (f"import os\nos.remove({str(canary)!r})", f"import shutil\nshutil.rmtree({str(tmp_path)!r})",
                 f"import os\nos.rename({str(canary)!r}, 'stolen.txt')"):
        r = run(code, iso)
        assert not r.passed, code
    assert canary.read_text() == "keep"


def test_writing_inside_own_dir_works(iso: str) -> None:
    r = run("open('f.txt', 'w').write('ok')\nprint(open('f.txt').read())", iso)
    assert r.passed and r.stdout.strip() == "ok"


def test_environment_secrets_are_not_visible(monkeypatch: pytest.MonkeyPatch, iso: str) -> None:
    monkeypatch.setenv("THINKTWICE_TEST_SECRET", "s3cr3t-value")
    r = run("import os\nprint(sorted(os.environ))\nprint(os.environ.get('THINKTWICE_TEST_SECRET'))", iso)
    assert r.passed
    assert "s3cr3t-value" not in r.stdout and "THINKTWICE_TEST_SECRET" not in r.stdout
    assert r.stdout.splitlines()[-1] == "None"


def test_socket_to_local_listener_does_not_connect(iso: str) -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted: list[object] = []

    def accept() -> None:
        try:
            conn, _ = server.accept()
            accepted.append(conn)
            conn.close()
        except OSError:
            pass

    codes = [
        f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\nprint('connected')",
        f"import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', {port}))\nprint('connected')",
    ]
    try:
        for code in codes:
            r = run(code, iso)
            t = threading.Thread(target=accept)
            t.start()
            t.join()
            assert not r.passed and "connected" not in r.stdout
    finally:
        server.close()
    assert accepted == []


def test_unencodable_program_fails_instead_of_raising(iso: str) -> None:
    r = run("x = '\ud800'\nprint('ran')", iso)  # a lone surrogate, as a JSON reply can carry
    assert r.status == "failed" and "ran" not in r.stdout
    assert "UnicodeDecodeError" in r.stderr


def test_segfault_is_killed(iso: str) -> None:
    r = run("import ctypes\nctypes.string_at(0)", iso)
    assert not r.passed and r.status == "killed"


def test_huge_stdout_is_bounded(iso: str) -> None:
    code = "import sys\nwhile True:\n    sys.stdout.write('x' * 100000)"
    r = run(code, iso, max_file_mb=2, max_output_chars=1000)
    assert not r.passed
    assert len(r.stdout) < 1100 and r.stdout.endswith("[truncated]")


def test_subprocess_spawn_is_refused(iso: str) -> None:
    r = run("import subprocess\nsubprocess.run(['true'])\nprint('spawned')", iso)
    assert not r.passed and "spawned" not in r.stdout


@pytest.mark.skipif(not IS_ROOT, reason="uid switch and network namespace need root")
def test_kernel_layers_active_as_root(iso: str) -> None:
    r = run("import os\nprint(os.getuid(), os.getgroups())", iso)
    assert r.passed and "uid" in r.isolated
    uid, groups = r.stdout.split(maxsplit=1)
    assert int(uid) == r.uid != 0 and groups.strip() == "[]"


def test_degrades_without_kernel_layers(tmp_path: Path) -> None:
    cfg = SandboxConfig(drop_privileges=False, network_namespace=False, timeout_s=2, isolation="weak")
    canary = tmp_path / "c.txt"
    canary.write_text("x")
    r = run_sandboxed(f"open({str(canary)!r}, 'a').write('y')", config=cfg)
    assert r.isolated == () and r.isolation == "weak" and not r.passed
    assert canary.read_text() == "x"
    assert run_sandboxed("print(2 + 2)", config=cfg).stdout.strip() == "4"


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        SandboxConfig(timeout_s=0)
    with pytest.raises(ConfigError):
        SandboxConfig(memory_mb=0)
    with pytest.raises(ConfigError, match="bwrap, weak"):
        SandboxConfig(isolation="jail")  # type: ignore[arg-type]


def test_weak_temp_dir_is_removed() -> None:
    r = run("import os\nprint(os.getcwd())", "weak")
    assert r.passed and "thinktwice-sbx-" in r.stdout
    assert not Path(r.stdout.strip()).exists()


def test_tempfile_lands_in_the_sandbox_dir(iso: str) -> None:
    r = run("import tempfile, os\nfd, p = tempfile.mkstemp()\nos.write(fd, b'x')\nprint(os.getcwd(), p)", iso)
    assert r.passed, r.stderr
    cwd, path = r.stdout.split()
    assert os.path.dirname(path) == cwd


def test_a_private_temp_dir_does_not_stop_the_run(iso: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)  # a throw-away uid cannot traverse it
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    r = run("print('ran')", iso)
    assert r.passed and r.stdout.strip() == "ran", r.stderr
