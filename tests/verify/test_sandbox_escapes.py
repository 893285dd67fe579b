"""The hardening issue's escapes, each run under bubblewrap and shown contained.

Every snippet here got through the sandbox before it ran under bwrap (uid switch, network namespace
and audit hook only): the targets are world-writable or world-readable host places a throw-away uid
can reach, and the snippets avoid the audit hook (dir_fd, _posixsubprocess, ctypes).
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from thinktwice.verify import SandboxConfig, SandboxResult, bwrap_support, run_sandboxed
from thinktwice.verify import cgroup as cgroup_mod
from thinktwice.verify import sandbox as sandbox_mod
from thinktwice.verify.hostproc import pids_of_uid, world_usable

SUPPORT = bwrap_support(os.path.realpath(sys.executable))
pytestmark = pytest.mark.skipif(
    not SUPPORT.ok,
    reason=f"bubblewrap cannot run here ({SUPPORT.reason}); CI installs it (apt-get install bubblewrap)",
)
HAS_CGROUP = cgroup_mod.cgroup_parents() is not None


@pytest.fixture(params=["default", "userns"])
def jail(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The bwrap mode a test runs under: this host's default, and (as root) the user-namespace mode
    every non-root user gets, through a system interpreter a throw-away uid can reach."""
    if request.param == "default":
        return str(SUPPORT.mode)
    if os.geteuid() != 0:
        pytest.skip("the default of a non-root user already is the userns mode")
    py = shutil.which("python3", path="/usr/bin:/bin")
    if py is None or not world_usable(py):
        pytest.skip("no system python3 that a throw-away uid can run")
    support = bwrap_support(os.path.realpath(py))
    if support.mode != "userns":
        pytest.skip(f"bwrap's userns mode does not work here: {support.reason}")
    monkeypatch.setattr(sys, "executable", py)
    return "userns"


def _run(code: str, mode: str, **limits: object) -> SandboxResult:
    r = run_sandboxed(code, config=SandboxConfig(**limits))  # type: ignore[arg-type]
    assert r.isolation == "bwrap" and r.isolated[:2] == ("bwrap", mode)
    if r.uid is not None:
        assert pids_of_uid(r.uid) == [], "a process of the run outlived it"
    return r


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A world-writable directory right under the system temp dir: reachable by any uid on the host."""
    d = Path(tempfile.mkdtemp(prefix="thinktwice-escape-", dir=tempfile.gettempdir()))
    os.chmod(d, 0o1777)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_dir_fd_write_outside_is_contained(shared_dir: Path, jail: str) -> None:
    code = (f"import os\nfd = os.open({str(shared_dir)!r}, os.O_RDONLY | os.O_DIRECTORY)\n"
            "w = os.open('pwned', os.O_CREAT | os.O_WRONLY, 0o666, dir_fd=fd)\n"
            "os.write(w, b'x')\nprint('wrote')")
    r = _run(code, jail)
    assert "wrote" not in r.stdout and not r.passed
    assert list(shared_dir.iterdir()) == []


FORK_EXEC = """
import _posixsubprocess, os
r, w = os.pipe()
pid = _posixsubprocess.fork_exec(
    [b"/bin/sh", b"-c", SCRIPT], [b"/bin/sh"], True, (), None, None, -1, -1, -1, -1, -1, -1,
    r, w, True, False, -1, None, None, None, -1, None, False)
os.close(w)
os.read(r, 64)
os.waitpid(pid, 0)
print("spawned")
"""


def test_fork_exec_shell_stays_in_the_jail(shared_dir: Path, jail: str) -> None:
    script = f"echo pwned > {shared_dir}/sh.txt; echo ran-$(id -u)"
    r = _run(FORK_EXEC.replace("SCRIPT", repr(script.encode())), jail)
    assert "spawned" in r.stdout  # the shell did run (the audit hook cannot see fork_exec) ...
    assert not (shared_dir / "sh.txt").exists()  # ... but only inside the jail
    assert r.uid is None or f"ran-{r.uid}" in r.stdout


def test_other_processes_cmdlines_are_invisible(jail: str) -> None:
    secret = f"sk-{secrets.token_hex(8)}"
    proxy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "--keys", secret])
    try:
        code = ("import os\nfor p in os.listdir('/proc'):\n    if p.isdigit():\n"
                "        try:\n            print(p, open(f'/proc/{p}/cmdline', 'rb').read())\n"
                "        except OSError:\n            pass\n")
        r = _run(code, jail)
    finally:
        proxy.kill()
        proxy.wait()
    assert r.passed, r.stderr
    assert secret not in r.stdout
    assert len(r.stdout.splitlines()) <= 4  # the jail's own init, the program (and its shell at most)


def test_world_readable_host_files_are_invisible(shared_dir: Path, jail: str) -> None:
    secret = secrets.token_hex(8)
    db = shared_dir / "runs.db"
    db.write_text(f"api_key={secret}")
    os.chmod(db, 0o644)
    targets = [str(db), "/etc/shadow", "/etc/passwd", os.path.abspath(__file__)]
    code = (f"for p in {targets!r}:\n    try:\n        print(p, open(p).read()[:200])\n"
            "    except OSError as e:\n        print(p, 'refused', type(e).__name__)\n")
    r = _run(code, jail)
    assert r.passed, r.stderr
    assert secret not in r.stdout and "root:" not in r.stdout
    assert r.stdout.count("refused") == len(targets), r.stdout


CONNECT = """
import ctypes, struct
libc = ctypes.CDLL(None, use_errno=True)
def connect(path):
    s = libc.socket(1, 1, 0)  # AF_UNIX, SOCK_STREAM, through libc: no audit event
    addr = struct.pack("H", 1) + path
    return libc.connect(s, ctypes.create_string_buffer(addr, len(addr)), len(addr))
print("fs", connect(FS))
print("abstract", connect(ABSTRACT))
"""


def test_host_unix_sockets_are_unreachable(shared_dir: Path, jail: str) -> None:
    path = shared_dir / "proxy.sock"
    abstract = f"\0thinktwice-test-{secrets.token_hex(6)}"
    listeners = []
    for addr in (str(path), abstract):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(addr)
        s.listen(4)
        s.setblocking(False)
        listeners.append(s)
    os.chmod(path, 0o777)
    try:
        code = CONNECT.replace("FS", repr(str(path).encode())).replace("ABSTRACT", repr(abstract.encode()))
        r = _run(code, jail)
        accepted = []
        for s in listeners:
            try:
                accepted.append(s.accept())
            except BlockingIOError:
                pass
    finally:
        for s in listeners:
            s.close()
    assert r.passed, r.stderr
    assert "fs 0" not in r.stdout and "abstract 0" not in r.stdout
    assert accepted == []


IPC = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
print("shm", libc.shmget(KEY, 4096, 0o1666))  # IPC_CREAT | 0666
print("sem", libc.semget(KEY, 1, 0o1666))
print("msg", libc.msgget(KEY, 0o1666))
import os
fd = os.open("/dev/shm", os.O_RDONLY | os.O_DIRECTORY)
os.write(os.open("NAME", os.O_CREAT | os.O_WRONLY, 0o666, dir_fd=fd), b"left behind")  # dir_fd: past the hook
"""


def _sysv_ids(key: int) -> dict[str, int]:
    """SysV objects with ``key`` in the host's IPC namespace: kind -> id."""
    found = {}
    for kind in ("shm", "sem", "msg"):
        try:
            lines = Path(f"/proc/sysvipc/{kind}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols and int(cols[0]) == key:
                found[kind] = int(cols[1])
    return found


def test_ipc_objects_and_dev_shm_files_do_not_outlive_the_run(jail: str) -> None:
    key = 0x7470_0000 + secrets.randbelow(0xFFFF)
    name = f"thinktwice-leak-{secrets.token_hex(6)}"
    try:
        r = _run(IPC.replace("KEY", str(key)).replace("NAME", name), jail)
        assert r.passed, r.stderr
        assert "shm -1" not in r.stdout  # created inside (the jail has its own IPC namespace) ...
        assert _sysv_ids(key) == {}  # ... and gone with it
        assert not Path("/dev/shm", name).exists()
    finally:  # on a sandbox that leaks, leave the host clean
        libc = ctypes.CDLL(None, use_errno=True)
        for kind, ident in _sysv_ids(key).items():
            {"shm": lambda i: libc.shmctl(i, 0, None), "sem": lambda i: libc.semctl(i, 0, 0),
             "msg": lambda i: libc.msgctl(i, 0, None)}[kind](ident)  # IPC_RMID
        Path("/dev/shm", name).unlink(missing_ok=True)


MEMORY = """
import os, select, sys, time
N, MB = 4, 200
r, w = os.pipe()
for _ in range(N):
    if os.fork() == 0:
        try:
            block = b"x" * (MB << 20)  # written, so resident
            os.write(w, b"k")
        except MemoryError:
            os.write(w, b"m")
        time.sleep(30)
        os._exit(0)
os.close(w)
got, deadline = b"", time.monotonic() + 2
while len(got) < N and select.select([r], [], [], max(0, deadline - time.monotonic()))[0]:
    got += os.read(r, 1)
held = got.count(b"k")
print("held", held)
sys.exit(0 if held == N else 1)
"""


NO_CGROUP = "no writable memory cgroup here: the tree's total is only bounded by memory_mb * max_procs"


@pytest.mark.skipif(not HAS_CGROUP, reason=NO_CGROUP)
def test_memory_limit_covers_the_whole_process_tree(jail: str) -> None:
    r = _run(MEMORY, jail, memory_mb=300, timeout_s=8)
    assert "cgroup" in r.isolated
    assert "held 4" not in r.stdout
    assert r.status == "memory", (r.status, r.stdout, r.stderr)


def _run_cgroups() -> set[Path]:
    parents = cgroup_mod.cgroup_parents()
    dirs = parents.dirs.values() if parents is not None else ()
    return {p for d in dirs for p in d.glob("thinktwice-sbx-*")}


def test_jail_dies_with_its_parent(tmp_path: Path) -> None:
    before = _run_cgroups()
    helper = subprocess.Popen(
        [sys.executable, "-c", "from thinktwice.verify import run_sandboxed\n"
         "run_sandboxed('import time\\ntime.sleep(60)', timeout_s=60)"],
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    try:
        tree = _wait_for_sandbox(helper.pid)
        assert tree, "the sandboxed program never started"
    finally:
        helper.send_signal(signal.SIGKILL)  # no cleanup code of ours runs
        helper.wait()
    deadline = time.monotonic() + 10
    while any(_alive(*p) for p in tree) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [p for p in tree if _alive(*p)]
    assert left == [], [Path(f"/proc/{p}/cmdline").read_bytes() for p, _ in left]
    for d in _run_cgroups() - before:  # the killed helper could not remove its run's cgroup
        _rmdir_when_released(d)


def _rmdir_when_released(d: Path, seconds: float = 10.0) -> None:
    """Remove an emptied cgroup; the kernel may hold it "busy" for a moment after its last task died
    (the sandbox itself prunes such leftovers later, so one that stays busy is left to it)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            d.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                return
            time.sleep(0.1)


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(_stat(int(entry))[1])
            except (OSError, ValueError, IndexError):
                continue
            kids.setdefault(ppid, []).append(int(entry))
    return kids


def _stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name (state first; start time is index 19)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _wait_for_sandbox(root: int) -> list[tuple[int, str]]:
    """Descendants of ``root`` (pid, start time) once one of them runs the sandbox's main.py."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        kids, tree, todo = _children(), [], [root]
        while todo:
            for k in kids.get(todo.pop(), []):
                tree.append(k)
                todo.append(k)
        for p in tree:
            try:
                if b"main.py" in Path(f"/proc/{p}/cmdline").read_bytes():
                    return [(q, _stat(q)[19]) for q in tree]
            except (OSError, IndexError):
                continue
        time.sleep(0.05)
    return []


def _alive(pid: int, started: str) -> bool:
    """``pid`` is still the same live process (not a zombie, not a reused pid)."""
    try:
        fields = _stat(pid)
    except OSError:
        return False
    return fields[0] not in ("Z", "X") and fields[19] == started


LITTER = """
import os, time
for d in (".", "/tmp", os.environ["HOME"], "/dev/shm"):
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    os.write(os.open("NAME", os.O_CREAT | os.O_WRONLY, 0o666, dir_fd=fd), b"x")
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(60)
    os._exit(0)
print("littered")
"""


def test_everything_the_run_made_is_gone(monkeypatch: pytest.MonkeyPatch, jail: str) -> None:
    made: dict[str, object] = {}
    real_mkdtemp, real_cgroup = sandbox_mod.tempfile.mkdtemp, sandbox_mod.create_run_cgroup

    def mkdtemp(*a: object, **k: object) -> str:
        made["dir"] = real_mkdtemp(*a, **k)  # type: ignore[arg-type]
        return made["dir"]  # type: ignore[return-value]

    def create(*a: object, **k: object) -> object:
        made["cgroup"] = real_cgroup(*a, **k)  # type: ignore[arg-type]
        return made["cgroup"]

    monkeypatch.setattr(sandbox_mod.tempfile, "mkdtemp", mkdtemp)
    monkeypatch.setattr(sandbox_mod, "create_run_cgroup", create)
    name = f"thinktwice-litter-{secrets.token_hex(6)}"
    r = _run(LITTER.replace("NAME", name), jail)
    assert r.passed and "littered" in r.stdout, r.stderr
    assert not Path(str(made["dir"])).exists()
    assert not Path("/tmp", name).exists() and not Path("/dev/shm", name).exists()
    cg = made["cgroup"]
    if cg is not None:
        assert all(not d.exists() for d in cg.dirs.values())  # type: ignore[attr-defined]


def test_jail_has_its_own_namespaces(jail: str) -> None:
    code = ("import os\nprint(os.uname().nodename)\n"
            "print(sorted(ln.split(':')[0].strip() for ln in open('/proc/net/dev').readlines()[2:]))\n"
            "print(sorted(os.listdir('/')))")
    r = _run(code, jail)
    assert r.passed, r.stderr
    host, nets, top = r.stdout.splitlines()
    assert host == "sandbox" != socket.gethostname()
    assert nets == "['lo']"
    jail_top = {"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "proc", "dev", "tmp", "home",
                "root"}
    host_only = {p.name for p in Path("/").iterdir()} - jail_top
    assert not any(repr(name) in top for name in host_only), top  # e.g. /work, /var, /run are not there


def test_a_private_temp_dir_does_not_stop_the_jail(jail: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)  # unreachable for a throw-away uid (the userns mode's bwrap runs as one)
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    code = "print(len(open('solution.py').read()))"
    r = _run(code, jail)
    assert r.passed and r.stdout.strip() == str(len(code)), r.stderr


def test_concurrent_runs_are_separate(jail: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    code = ("import os, time\nopen('mine', 'w').write(str(os.getpid()))\ntime.sleep(0.3)\n"
            "print(sorted(os.listdir('.')))")
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: _run(code, jail), range(4)))
    listing = "['main.py', 'mine', 'solution.py']"  # each its own work dir
    assert all(r.passed and r.stdout.strip() == listing for r in results), results
    uids = {r.uid for r in results}
    assert None in uids or len(uids) == 4  # as root: one throw-away uid each
