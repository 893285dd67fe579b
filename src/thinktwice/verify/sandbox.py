"""Run untrusted Python (model-written code and its tests) in a contained subprocess.

``isolation="bwrap"`` (the default) jails every run with bubblewrap and a per-run cgroup and refuses
to run where that is impossible; ``"weak"`` is the opt-in fallback (throw-away uid, network
namespace, resource limits, in-process guard). docs/sandbox.md lists each layer and what it needs.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, get_args

from thinktwice.errors import CapabilityError, ConfigError
from thinktwice.verify.bwrap import HOME_DIR, WORK_DIR, Mode, bwrap_argv, bwrap_support, data_fd
from thinktwice.verify.cgroup import create_run_cgroup
from thinktwice.verify.hostproc import (
    CLONE_NEWNET,
    fresh_uid,
    kernel_layers,
    kill_uid,
    libc_unshare,
    sandbox_python,
    task_count,
    world_usable,
)

__all__ = ["ISOLATIONS", "Isolation", "SandboxConfig", "SandboxResult", "check_isolation",
           "run_sandboxed"]

log = logging.getLogger(__name__)

Status = Literal["passed", "failed", "timeout", "memory", "error", "killed"]
Isolation = Literal["bwrap", "weak"]
ISOLATIONS: tuple[str, ...] = get_args(Isolation)

_BWRAP_TASKS = 2  # bwrap's own processes in the tree: the outer one and the namespace's init
_WEAK_HINT = ("install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap), or accept the weaker sandbox "
              "explicitly with SandboxConfig(isolation='weak') / the task option -T sandbox=weak "
              "(recorded in the run's task version)")


@dataclass(frozen=True, slots=True)
class SandboxResult:
    """Outcome of one sandboxed run. ``passed`` is True only for exit status 0 within limits.

    ``isolation`` is the mode that ran; ``isolated`` lists the layers that were active ("bwrap",
    its mode "userns" or "privileged", "uid", "cgroup", "netns"); ``uid`` is the throw-away uid the
    code ran as (None when it kept ours); ``pgid`` is the process group of the child we started
    (everything it spawned is gone before this result is returned).
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
    isolation: Isolation = "weak"


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """Limits for :func:`run_sandboxed`.

    ``isolation``: "bwrap" refuses to run (CapabilityError) where bubblewrap cannot start; "weak"
    is the opt-in without it. ``memory_mb`` caps each process's address space and, when a cgroup can
    be made, the whole process tree, files in its tmpfs included; without a cgroup the tree may use
    up to ``memory_mb * max_procs``. ``max_procs`` caps processes and threads (cgroup, or the
    throw-away uid's RLIMIT_NPROC). ``max_file_mb`` caps every file the code writes, stdout and
    stderr included; ``max_output_chars`` truncates what is returned of them.
    ``drop_privileges``/``network_namespace`` switch the weak mode's uid and network layers.
    """

    timeout_s: float = 5.0
    memory_mb: int = 512
    max_procs: int = 32
    max_file_mb: int = 16
    max_open_files: int = 64
    max_output_chars: int = 20_000
    drop_privileges: bool = True
    network_namespace: bool = True
    isolation: Isolation = "bwrap"

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ConfigError(f"timeout_s must be > 0, got {self.timeout_s}")
        for name in ("memory_mb", "max_procs", "max_file_mb", "max_open_files", "max_output_chars"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.isolation not in ISOLATIONS:
            raise ConfigError(
                f"sandbox isolation must be one of {', '.join(ISOLATIONS)}; got {self.isolation!r}")


# The guard runs first in the child; {workdir!r} and {drop_uid!r} are filled in. Builtins and os only.
_GUARD = r'''
def _install():
    import os, sys
    uid = {drop_uid!r}
    if uid is not None:  # privileged bwrap: leave root (and its two capabilities) for good
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
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


def _preexec(cfg: SandboxConfig, *, nproc: int | None, uid: int | None, netns: bool,
             cgroup_procs: tuple[str, ...] = ()) -> Callable[[], None]:
    """The function run in the child between fork and exec (system calls only, values prepared here)."""
    unshare = libc_unshare() if netns else None
    mem = cfg.memory_mb * 1024 * 1024
    fsize = cfg.max_file_mb * 1024 * 1024
    cpu = int(cfg.timeout_s) + 1

    def child() -> None:
        pid = str(os.getpid()).encode()
        for path in cgroup_procs:  # first, so that everything after is charged to the run's cgroup
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_DATA, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_NOFILE, (cfg.max_open_files, cfg.max_open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if unshare is not None:
            unshare(CLONE_NEWNET)  # failure is tolerated: the audit hook still refuses sockets
        if nproc is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)

    return child


def _nproc(cfg: SandboxConfig, uid: int | None, extra: int) -> int | None:
    """RLIMIT_NPROC for the child: it counts every task of the real uid and root ignores it, so a
    fresh uid gets ``max_procs`` (+ ``extra`` for bwrap's own) and an ordinary user its current
    task count on top."""
    if uid is not None:
        return cfg.max_procs + extra
    if os.geteuid() != 0 and os.path.isdir("/proc"):
        return task_count(os.getuid()) + cfg.max_procs + extra
    return None


def _private(path: Path) -> BinaryIO:
    """A new file only we can read (the program's stdout or stderr)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")


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


def _classify(rc: int | None, timed_out: bool, stderr: str, *, oom: bool = False,
              bwrap: bool = False) -> Status:
    """How a run ended; under bwrap a signal ``n`` shows as exit status ``128 + n``."""
    if timed_out:
        return "timeout"
    if rc == 0:
        return "passed"
    if oom or "MemoryError" in stderr:
        return "memory"
    if bwrap and rc == 1 and stderr.startswith("bwrap:"):
        return "error"  # the jail could not be set up
    sig = None
    if rc is not None and rc < 0:
        sig = -rc
    elif bwrap and rc is not None and 128 < rc < 160:
        sig = rc - 128
    if sig == signal.SIGXCPU:
        return "timeout"  # the CPU-seconds limit
    if sig is not None:
        return "killed"  # a signal: segfault, abort, the kernel's OOM killer
    return "failed"


def _wait(proc: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    """The exit status, or None after ``timeout_s``. Sleeps on a pidfd where the kernel has them:
    ``Popen.wait(timeout)`` polls with sleeps of up to 50 ms, which is most of a short run's cost."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        ready = poller.poll(max(1, int(timeout_s * 1000)))
    finally:
        os.close(fd)
    return proc.wait() if ready else None


def _child_pid(info_r: int) -> int | None:
    """The jail's init pid from bwrap's --info-fd (written right after it is cloned)."""
    poller = select.poll()
    poller.register(info_r, select.POLLIN)
    try:
        if not poller.poll(0):
            return None
        data = os.read(info_r, 4096)
        pid = json.loads(data.decode()).get("child-pid")
    except (OSError, ValueError, AttributeError):
        return None
    return pid if isinstance(pid, int) and pid > 1 else None


def _stop_jail(proc: subprocess.Popen[bytes], info_r: int) -> tuple[int, bool]:
    """Kill the jail's init (the kernel then kills its whole pid namespace before bwrap exits), else
    the outer bwrap; returns the exit status and whether the namespace is known to be empty."""
    init = _child_pid(info_r)
    if init is not None:
        try:
            os.kill(init, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            return proc.wait(timeout=5), True
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # init then dies of --die-with-parent, a little later
    except (ProcessLookupError, PermissionError):
        pass
    return proc.wait(), False


def check_isolation(config: SandboxConfig) -> None:
    """Raise CapabilityError when ``config``'s isolation cannot run here (probed once), so that a
    task can refuse before any sampling rather than at its first grade."""
    if config.isolation == "bwrap":
        _jail()


def _jail() -> tuple[str, str, Mode]:
    """(interpreter, bwrap executable, mode) for a bwrap run, or the CapabilityError saying why not."""
    python = os.path.realpath(sys.executable)
    support = bwrap_support(python)
    if not support.ok or support.executable is None or support.mode is None:
        raise CapabilityError(f"the code sandbox needs bubblewrap: {support.reason}; {_WEAK_HINT}")
    return python, support.executable, support.mode


def _run_bwrap(code: str, cfg: SandboxConfig, outer: Path) -> SandboxResult:
    python, executable, mode = _jail()
    uid = fresh_uid() if os.geteuid() == 0 else None
    mem = cfg.memory_mb * 1024 * 1024
    guard = _GUARD.format(workdir=WORK_DIR, drop_uid=uid if mode == "privileged" else None)
    fds = {"solution.py": data_fd(code), "main.py": data_fd(guard)}  # by fd: no host path to reach
    cg = create_run_cgroup(mem, cfg.max_procs + _BWRAP_TASKS)
    info_r, info_w = os.pipe()
    t0 = time.monotonic()
    empty = False  # whether the jail's pid namespace is known to be gone
    try:
        argv = bwrap_argv(executable, mode, python, files=fds, tmpfs_bytes=mem, info_fd=info_w)
        argv += [python, "-I", "-S", "-B", "main.py"]
        pre = _preexec(cfg, nproc=_nproc(cfg, uid, _BWRAP_TASKS), uid=uid if mode == "userns" else None,
                       netns=False, cgroup_procs=cg.procs_files if cg else ())
        env = {"PATH": "/usr/bin:/bin", "HOME": HOME_DIR, "TMPDIR": WORK_DIR, "LANG": "C.UTF-8"}
        out_path, err_path = outer / "stdout", outer / "stderr"
        with _private(out_path) as out_f, _private(err_path) as err_f:
            try:
                proc = subprocess.Popen(argv, cwd="/", env=env, stdin=subprocess.DEVNULL, stdout=out_f,
                                        stderr=err_f, start_new_session=True, close_fds=True,
                                        pass_fds=(info_w, *fds.values()),
                                        preexec_fn=pre)  # noqa: PLW1509 (system calls only, no locks)
            except (OSError, subprocess.SubprocessError) as e:
                return SandboxResult(False, "error", "", f"sandbox could not start: {e}",
                                     time.monotonic() - t0, isolation="bwrap")
            for fd in (info_w, *fds.values()):
                os.close(fd)
            info_w, fds = -1, {}
            # bwrap exits only after its init, and init only once every process of its pid
            # namespace is gone: a jail that ended by itself left nothing behind
            try:
                rc = _wait(proc, cfg.timeout_s)
            except BaseException:  # interrupted: take the jail down before unwinding
                _stop_jail(proc, info_r)
                raise
            timed_out = rc is None
            if rc is None:
                rc, empty = _stop_jail(proc, info_r)
            else:
                empty = True
        oom = cg is not None and cg.oom_kills() > 0
    finally:
        if cg is not None:
            cg.close()
        elif uid is not None and not empty:
            kill_uid(uid)
        for fd in (info_r, info_w, *fds.values()):
            if fd >= 0:
                os.close(fd)
    seconds = time.monotonic() - t0
    stdout = _read_head(out_path, cfg.max_output_chars)
    stderr = _read_head(err_path, cfg.max_output_chars)
    status = _classify(rc, timed_out, stderr, oom=oom, bwrap=True)
    layers = ("bwrap", mode) + (("uid",) if uid is not None else ()) + (("cgroup",) if cg is not None else ())
    return SandboxResult(status == "passed", status, stdout, stderr, seconds, rc, uid, layers, proc.pid,
                         "bwrap")


def _run_weak(code: str, cfg: SandboxConfig, outer: Path) -> SandboxResult:
    python = sandbox_python(cfg.drop_privileges)
    can_switch, can_netns = kernel_layers(python)
    uid = fresh_uid() if cfg.drop_privileges and can_switch else None
    netns = cfg.network_namespace and can_netns
    if uid is None and python != sys.executable:
        python = sys.executable
    t0 = time.monotonic()
    os.chmod(outer, 0o711)
    work = outer / "work"
    work.mkdir(mode=0o700)
    (work / "solution.py").write_bytes(code.encode("utf-8", "surrogatepass"))  # bad text: a SyntaxError
    (work / "main.py").write_text(_GUARD.format(workdir=str(work.resolve()), drop_uid=None), encoding="utf-8")
    if uid is not None:
        for p in (work, work / "solution.py", work / "main.py"):
            os.chown(p, uid, uid)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "TMPDIR": str(work), "LANG": "C.UTF-8"}
    out_path, err_path = outer / "stdout", outer / "stderr"
    with _private(out_path) as out_f, _private(err_path) as err_f:
        try:
            proc = subprocess.Popen(
                [python, "-I", "-S", "-B", "main.py"], cwd=work, env=env, stdin=subprocess.DEVNULL,
                stdout=out_f, stderr=err_f, start_new_session=True, close_fds=True,
                preexec_fn=_preexec(cfg, nproc=_nproc(cfg, uid, 0), uid=uid, netns=netns),  # noqa: PLW1509
            )
        except (OSError, subprocess.SubprocessError) as e:
            return SandboxResult(False, "error", "", f"sandbox could not start: {e}", time.monotonic() - t0,
                                 isolation="weak")
        rc: int | None = None
        try:
            rc = _wait(proc, cfg.timeout_s)
        finally:
            timed_out = rc is None
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if uid is not None:
                kill_uid(uid)
            if rc is None:
                rc = proc.wait()
    seconds = time.monotonic() - t0
    stdout = _read_head(out_path, cfg.max_output_chars)
    stderr = _read_head(err_path, cfg.max_output_chars)
    status = _classify(rc, timed_out, stderr)
    layers = tuple(x for x, on in (("uid", uid is not None), ("netns", netns)) if on)
    return SandboxResult(status == "passed", status, stdout, stderr, seconds, rc, uid, layers, proc.pid,
                         "weak")


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
    keyword limits. Raises CapabilityError when ``isolation="bwrap"`` cannot start here.

    >>> run_sandboxed("assert 1 + 1 == 2").status
    'passed'
    """
    cfg = config or SandboxConfig(timeout_s=timeout_s, memory_mb=memory_mb, max_procs=max_procs)
    # bwrap reads nothing from this directory through a path; a weak run's throw-away uid must reach it
    parent = None if cfg.isolation == "bwrap" else _traversable_tmp()
    outer = Path(tempfile.mkdtemp(prefix="thinktwice-sbx-", dir=parent))
    try:
        return _run_bwrap(code, cfg, outer) if cfg.isolation == "bwrap" else _run_weak(code, cfg, outer)
    finally:
        _remove_tree(outer)


def _traversable_tmp() -> str | None:
    """The temp dir when every uid can traverse to it (the default), else /tmp where that is the
    usual sticky, world-writable place; None keeps the default."""
    tmp = tempfile.gettempdir()
    if world_usable(tmp):
        return None
    st = os.stat("/tmp") if os.path.isdir("/tmp") else None
    return "/tmp" if st is not None and st.st_mode & 0o1777 == 0o1777 else None


def _remove_tree(path: Path) -> None:
    """Delete ``path``, also where the code (as our own uid, weak mode) made directories unreadable."""
    for top, dirs, _ in os.walk(path):
        for d in dirs:
            p = os.path.join(top, d)
            if not os.path.islink(p):  # never follow a link the code planted
                try:
                    os.chmod(p, 0o700)
                except OSError:
                    pass
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        log.warning("could not remove sandbox directory %s", path)
