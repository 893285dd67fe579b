"""Run untrusted Python (model-written code and its tests) in a contained subprocess.

Layers, strongest first (each one degrades silently when the host does not allow it):

1. Kernel: a fresh session/process group (killed as a whole on exit or timeout); when running as
   root, a private network namespace (``unshare(CLONE_NEWNET)``: no interfaces but a down
   loopback) and a switch to a throw-away uid with no groups, so the code cannot touch the
   caller's files (world-writable places such as /tmp excepted) and ``RLIMIT_NPROC`` bounds fork
   bombs; resource limits on address space, CPU seconds, file size, open files and core dumps.
2. Process: ``python -I -S`` (isolated: no site, no user paths, no ``PYTHON*`` variables), a
   scrubbed environment (``PATH``, ``LANG``, and ``HOME`` = ``TMPDIR`` = the working directory),
   a fresh working directory deleted afterwards, a wall-clock timeout.
3. In-process guard (defence in depth, NOT a jail: ``ctypes`` can get around it): an audit hook
   installed before the candidate's code runs refuses sockets, subprocesses and writes, deletes
   or renames outside the working directory.

Without root (or without the permissions for namespaces/uid switching) only the kernel resource
limits, process-group cleanup and the in-process guard remain; do not run hostile code that way
on a machine you care about.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import resource
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from thinktwice.errors import ConfigError

__all__ = ["SandboxConfig", "SandboxResult", "kernel_layers", "run_sandboxed", "sandbox_python"]

log = logging.getLogger(__name__)

Status = Literal["passed", "failed", "timeout", "memory", "error", "killed"]

_CLONE_NEWNET = 0x40000000
_UID_BASE = 1_500_000_000  # throw-away uids live far above any real account


@dataclass(frozen=True, slots=True)
class SandboxResult:
    """Outcome of one sandboxed run. ``passed`` is True only for exit status 0 within limits.

    ``uid`` is the uid the code ran as (None when privileges were not dropped); ``isolated``
    lists the kernel layers that were active ("uid", "netns"); ``pgid`` is the process group
    the code ran in (killed before this result is returned).
    """

    passed: bool
    status: Status
    stdout: str
    stderr: str
    seconds: float
    returncode: int | None = None
    uid: int | None = None
    isolated: tuple[str, ...] = ()
    pgid: int | None = None


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """Limits for :func:`run_sandboxed`.

    ``max_procs`` caps processes and threads of the sandbox uid (only enforced when the uid is
    dropped); ``max_file_mb`` caps every file the code writes, its stdout and stderr included;
    ``max_output_chars`` truncates what is returned of stdout/stderr.
    """

    timeout_s: float = 5.0
    memory_mb: int = 512
    max_procs: int = 32
    max_file_mb: int = 16
    max_open_files: int = 64
    max_output_chars: int = 20_000
    drop_privileges: bool = True
    network_namespace: bool = True

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ConfigError(f"timeout_s must be > 0, got {self.timeout_s}")
        for name in ("memory_mb", "max_procs", "max_file_mb", "max_open_files", "max_output_chars"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")


# The guard runs first in the child; {workdir!r} is filled in. It only uses builtins and os.
_GUARD = r'''
def _install():
    import os, sys
    root = {workdir!r}
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    path_events = frozenset({{"os.remove", "os.rmdir", "os.rename", "os.link", "os.symlink",
        "os.truncate", "os.chmod", "os.chown", "os.mkdir", "os.utime", "shutil.rmtree",
        "os.chflags", "os.lchown"}})
    deny = ("socket.", "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
        "os.startfile", "pty.spawn", "webbrowser.open")

    def inside(p):
        if isinstance(p, int):
            return True
        try:
            p = os.path.realpath(os.fsdecode(p))
        except Exception:
            return False
        return p == root or p.startswith(root + "/") or p == "/dev/null"

    def hook(event, args):
        if event.startswith(deny) and event != "socket.gethostname":
            raise PermissionError(event + " is not allowed in the thinktwice sandbox")
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & write_flags)
            if writing and not inside(path):
                raise PermissionError("writing outside the sandbox is not allowed: " + repr(path))
        elif event in path_events:
            for a in args[:2]:
                if isinstance(a, (str, bytes, os.PathLike)) and not inside(a):
                    raise PermissionError(event + " outside the sandbox is not allowed: " + repr(a))

    sys.addaudithook(hook)
    with open("solution.py", encoding="utf-8") as f:
        return compile(f.read(), "solution.py", "exec")


exec(_install(), {{"__name__": "__main__", "__builtins__": __builtins__}})
'''


@functools.lru_cache(maxsize=1)
def _libc_unshare() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.unshare
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


def _world_usable(python: str) -> bool:
    """True when an unprivileged uid can execute ``python`` and read its standard library."""
    real = Path(os.path.realpath(python))
    try:
        if not os.stat(real).st_mode & stat.S_IXOTH:
            return False
        for parent in real.parents:
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                return False
    except OSError:
        return False
    return True


@functools.lru_cache(maxsize=4)
def sandbox_python(dropping: bool = True) -> str:
    """The interpreter sandboxed code runs under: this one, unless a dropped uid cannot reach it
    (e.g. a pyenv under /root), then the first ``python3`` on PATH that it can (may be another
    version; sandboxed code should need only the standard library)."""
    if not dropping or _world_usable(sys.executable):
        return sys.executable
    for name in (f"python{sys.version_info.major}.{sys.version_info.minor}", "python3"):
        for d in ("/usr/bin", "/usr/local/bin", "/bin"):
            cand = os.path.join(d, name)
            if os.path.exists(cand) and _world_usable(cand):
                return cand
        found = shutil.which(name)
        if found and _world_usable(found):
            return found
    return sys.executable


def _preexec(cfg: SandboxConfig, uid: int | None, netns: bool) -> Callable[[], None]:
    """The function run in the child between fork and exec (only async-signal-light calls)."""
    unshare = _libc_unshare() if netns else None
    mem = cfg.memory_mb * 1024 * 1024
    fsize = cfg.max_file_mb * 1024 * 1024
    cpu = int(cfg.timeout_s) + 1
    # RLIMIT_NPROC counts every task (threads included) of the real uid, and root ignores it.
    # A fresh uid starts at zero; an ordinary user's existing tasks are added to the allowance.
    nproc: int | None = None
    if uid is not None:
        nproc = cfg.max_procs
    elif os.geteuid() != 0 and os.path.isdir("/proc"):
        nproc = _task_count(os.getuid()) + cfg.max_procs

    def child() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_DATA, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_NOFILE, (cfg.max_open_files, cfg.max_open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if unshare is not None:
            unshare(_CLONE_NEWNET)  # failure is tolerated: the audit hook still refuses sockets
        if nproc is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)

    return child


def _pids_of_uid(uid: int) -> list[int]:
    """Live (non-zombie) processes whose real uid is ``uid``, from /proc."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", encoding="ascii", errors="replace") as f:
                zombie = False
                for line in f:
                    if line.startswith("State:"):
                        zombie = line.split()[1] in ("Z", "X")  # dead, waiting to be reaped
                    elif line.startswith("Uid:"):
                        if int(line.split()[1]) == uid and not zombie:
                            out.append(int(entry))
                        break
        except (OSError, ValueError, IndexError):
            continue
    return out


def _task_count(uid: int) -> int:
    """Tasks (threads) of ``uid``: what RLIMIT_NPROC counts."""
    total = 0
    for pid in _pids_of_uid(uid):
        try:
            total += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue
    return total


def _kill_all(pgid: int, uid: int | None) -> None:
    """Kill the process group and, when the sandbox had its own uid, every process of that uid
    (children that called setsid() leave the group but cannot leave the uid)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if uid is None or not os.path.isdir("/proc"):
        return
    for _ in range(50):
        pids = _pids_of_uid(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.01)
    log.warning("sandbox uid %d still has processes after cleanup", uid)


def _read_head(path: Path, limit: int) -> str:
    try:
        with path.open("rb") as f:
            data = f.read(limit * 4 + 4)
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    if len(text) > limit or path.stat().st_size > len(data):
        return text[:limit] + "\n...[truncated]"
    return text


def _classify(rc: int | None, timed_out: bool, stderr: str) -> Status:
    if timed_out:
        return "timeout"
    if rc == 0:
        return "passed"
    if "MemoryError" in stderr:
        return "memory"
    if rc == -signal.SIGXCPU:
        return "timeout"  # the CPU-seconds limit
    if rc is not None and rc < 0:
        return "killed"  # a signal: segfault, abort, the kernel's OOM killer
    return "failed"


@functools.lru_cache(maxsize=8)
def kernel_layers(python: str) -> tuple[bool, bool]:
    """Whether a uid switch and a network namespace work on this host (probed once each with a
    trivial child; both False when not root)."""
    if not (hasattr(os, "geteuid") and os.geteuid() == 0):
        return (False, False)

    def probe(pre: Callable[[], None]) -> bool:
        try:
            return subprocess.run([python, "-I", "-S", "-c", "pass"], preexec_fn=pre,
                                  capture_output=True, timeout=30, check=False).returncode == 0
        except (OSError, subprocess.SubprocessError):
            return False

    def switch() -> None:
        os.setgroups([])
        os.setgid(_UID_BASE - 1)
        os.setuid(_UID_BASE - 1)

    unshare = _libc_unshare()

    def netns() -> None:
        if unshare is None or unshare(_CLONE_NEWNET) != 0:
            raise OSError("unshare(CLONE_NEWNET) failed")

    return (probe(switch), probe(netns))


def run_sandboxed(
    code: str,
    *,
    timeout_s: float = 5.0,
    memory_mb: int = 512,
    max_procs: int = 32,
    config: SandboxConfig | None = None,
) -> SandboxResult:
    """Run ``code`` as a Python program in the sandbox and report how it ended.

    Blocking; call it through ``asyncio.to_thread`` from async code. ``config`` overrides the
    keyword limits.

    >>> run_sandboxed("assert 1 + 1 == 2").status
    'passed'
    """
    cfg = config or SandboxConfig(timeout_s=timeout_s, memory_mb=memory_mb, max_procs=max_procs)
    python = sandbox_python(cfg.drop_privileges)
    can_switch, can_netns = kernel_layers(python)
    uid = _UID_BASE + secrets.randbelow(100_000_000) if cfg.drop_privileges and can_switch else None
    netns = cfg.network_namespace and can_netns
    if uid is None and python != sys.executable:
        python = sys.executable
    outer = Path(tempfile.mkdtemp(prefix="thinktwice-sbx-"))
    t0 = time.monotonic()
    try:
        os.chmod(outer, 0o711)
        work = outer / "work"
        work.mkdir(mode=0o700)
        (work / "solution.py").write_text(code, encoding="utf-8")
        (work / "main.py").write_text(_GUARD.format(workdir=str(work.resolve())), encoding="utf-8")
        if uid is not None:
            for p in (work, work / "solution.py", work / "main.py"):
                os.chown(p, uid, uid)
        env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "TMPDIR": str(work), "LANG": "C.UTF-8"}
        out_path, err_path = outer / "stdout", outer / "stderr"
        with out_path.open("wb") as out_f, err_path.open("wb") as err_f:
            try:
                proc = subprocess.Popen(
                    [python, "-I", "-S", "-B", "main.py"],
                    cwd=work,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out_f,
                    stderr=err_f,
                    start_new_session=True,
                    close_fds=True,
                    preexec_fn=_preexec(cfg, uid, netns),  # noqa: PLW1509 (only C-level calls, no locks)
                )
            except (OSError, subprocess.SubprocessError) as e:
                return SandboxResult(False, "error", "", f"sandbox could not start: {e}",
                                     time.monotonic() - t0)
            timed_out = False
            try:
                rc: int | None = proc.wait(timeout=cfg.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_all(proc.pid, uid)
                rc = proc.wait()
            finally:
                _kill_all(proc.pid, uid)
        seconds = time.monotonic() - t0
        stdout = _read_head(out_path, cfg.max_output_chars)
        stderr = _read_head(err_path, cfg.max_output_chars)
        status = _classify(rc, timed_out, stderr)
        layers = tuple(x for x, on in (("uid", uid is not None), ("netns", netns)) if on)
        return SandboxResult(status == "passed", status, stdout, stderr, seconds, rc, uid, layers, proc.pid)
    finally:
        shutil.rmtree(outer, ignore_errors=True)
