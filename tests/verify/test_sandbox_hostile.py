"""Hostile snippets must be contained by the sandbox: reported as failures, host untouched."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from thinktwice.errors import ConfigError
from thinktwice.verify import SandboxConfig, SandboxResult, run_sandboxed
from thinktwice.verify.sandbox import _pids_of_uid

IS_ROOT = os.geteuid() == 0


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


def test_benign_code_passes() -> None:
    r = run_sandboxed("import json, math\nprint(json.dumps({'x': math.sqrt(4)}))")
    assert r.passed and r.status == "passed"
    assert r.stdout.strip() == '{"x": 2.0}'


def test_failing_assertion_is_failed() -> None:
    r = run_sandboxed("assert 1 == 2")
    assert not r.passed and r.status == "failed"
    assert "AssertionError" in r.stderr


def test_infinite_loop_times_out() -> None:
    r = run_sandboxed("while True:\n    pass", timeout_s=1)
    assert r.status == "timeout" and not r.passed
    _assert_no_leftovers(r)


def test_sleeping_child_process_is_killed() -> None:
    code = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n"
    r = run_sandboxed(code, timeout_s=2)
    _assert_no_leftovers(r)


def test_fork_bomb_is_contained() -> None:
    r = run_sandboxed("import os\nwhile True:\n    os.fork()", timeout_s=3, max_procs=16)
    assert not r.passed
    assert r.status in ("failed", "timeout", "killed")
    _assert_no_leftovers(r)


def test_huge_allocation_is_memory() -> None:
    r = run_sandboxed("x = bytearray(10 * 1024 ** 3)", memory_mb=256)
    assert not r.passed and r.status == "memory"


def test_write_outside_tmp_is_refused(tmp_path: Path) -> None:
    canary = tmp_path / "canary.txt"
    canary.write_text("original")
    absent = tmp_path / "absent.txt"
    code = f"open({str(canary)!r}, 'w').write('pwned')\n"
    r = run_sandboxed(code)
    assert not r.passed
    r2 = run_sandboxed(f"import os\nfd = os.open({str(absent)!r}, os.O_CREAT | os.O_WRONLY)\n")
    assert not r2.passed
    assert canary.read_text() == "original"
    assert not absent.exists()


def test_deleting_outside_files_is_refused(tmp_path: Path) -> None:
    canary = tmp_path / "keep.txt"
    canary.write_text("keep")
    for code in (f"import os\nos.remove({str(canary)!r})", f"import shutil\nshutil.rmtree({str(tmp_path)!r})",
                 f"import os\nos.rename({str(canary)!r}, 'stolen.txt')"):
        r = run_sandboxed(code)
        assert not r.passed, code
    assert canary.read_text() == "keep"


def test_writing_inside_own_dir_works() -> None:
    r = run_sandboxed("open('f.txt', 'w').write('ok')\nprint(open('f.txt').read())")
    assert r.passed and r.stdout.strip() == "ok"


def test_environment_secrets_are_not_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THINKTWICE_TEST_SECRET", "s3cr3t-value")
    r = run_sandboxed("import os\nprint(sorted(os.environ))\nprint(os.environ.get('THINKTWICE_TEST_SECRET'))")
    assert r.passed
    assert "s3cr3t-value" not in r.stdout and "THINKTWICE_TEST_SECRET" not in r.stdout
    assert r.stdout.splitlines()[-1] == "None"


def test_socket_to_local_listener_does_not_connect() -> None:
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
            r = run_sandboxed(code)
            t = threading.Thread(target=accept)
            t.start()
            t.join()
            assert not r.passed and "connected" not in r.stdout
    finally:
        server.close()
    assert accepted == []


def test_segfault_is_killed() -> None:
    r = run_sandboxed("import ctypes\nctypes.string_at(0)")
    assert not r.passed and r.status == "killed"


def test_huge_stdout_is_bounded() -> None:
    code = "import sys\nwhile True:\n    sys.stdout.write('x' * 100000)"
    r = run_sandboxed(code, config=SandboxConfig(max_file_mb=2, max_output_chars=1000))
    assert not r.passed
    assert len(r.stdout) < 1100 and r.stdout.endswith("[truncated]")


def test_subprocess_spawn_is_refused() -> None:
    r = run_sandboxed("import subprocess\nsubprocess.run(['true'])\nprint('spawned')")
    assert not r.passed and "spawned" not in r.stdout


@pytest.mark.skipif(not IS_ROOT, reason="uid switch and network namespace need root")
def test_kernel_layers_active_as_root() -> None:
    r = run_sandboxed("import os\nprint(os.getuid(), os.getgroups())")
    assert r.passed and "uid" in r.isolated
    uid, groups = r.stdout.split(maxsplit=1)
    assert int(uid) == r.uid != 0 and groups.strip() == "[]"


def test_degrades_without_kernel_layers(tmp_path: Path) -> None:
    cfg = SandboxConfig(drop_privileges=False, network_namespace=False, timeout_s=2)
    canary = tmp_path / "c.txt"
    canary.write_text("x")
    r = run_sandboxed(f"open({str(canary)!r}, 'a').write('y')", config=cfg)
    assert r.isolated == () and not r.passed
    assert canary.read_text() == "x"
    assert run_sandboxed("print(2 + 2)", config=cfg).stdout.strip() == "4"


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        SandboxConfig(timeout_s=0)
    with pytest.raises(ConfigError):
        SandboxConfig(memory_mb=0)


def test_temp_dir_is_removed() -> None:
    r = run_sandboxed("import os\nprint(os.getcwd())")
    assert r.passed
    assert not Path(r.stdout.strip()).exists()


def test_tempfile_lands_in_the_sandbox_dir() -> None:
    r = run_sandboxed("import tempfile, os\nfd, p = tempfile.mkstemp()\nos.write(fd, b'x')\nprint(p)")
    assert r.passed, r.stderr
    assert "thinktwice-sbx-" in r.stdout
