"""Host-side process helpers of the sandbox: throw-away uids, a network namespace without bubblewrap,
finding and killing a uid's processes through /proc."""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["fresh_uid", "kernel_layers", "kill_uid", "libc_unshare", "pids_of_uid", "sandbox_python",
           "task_count", "world_usable"]

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
UID_BASE = 1_500_000_000  # throw-away uids live far above any real account


def fresh_uid() -> int:
    """A random throw-away uid for one run (no account, no files, no processes)."""
    return UID_BASE + secrets.randbelow(100_000_000)


@functools.lru_cache(maxsize=1)
def libc_unshare() -> Callable[[int], int] | None:
    """libc's ``unshare(2)``, or None where it cannot be loaded."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.unshare
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


def world_usable(path: str) -> bool:
    """True when an unprivileged uid can traverse to ``path`` and execute (or enter) it."""
    real = Path(os.path.realpath(path))
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
    """The interpreter weakly sandboxed code runs under: this one, unless a dropped uid cannot reach
    it (e.g. a pyenv under /root), then the first ``python3`` on PATH that it can (may be another
    version; sandboxed code should need only the standard library)."""
    if not dropping or world_usable(sys.executable):
        return sys.executable
    for name in (f"python{sys.version_info.major}.{sys.version_info.minor}", "python3"):
        for d in ("/usr/bin", "/usr/local/bin", "/bin"):
            cand = os.path.join(d, name)
            if os.path.exists(cand) and world_usable(cand):
                return cand
        found = shutil.which(name)
        if found and world_usable(found):
            return found
    return sys.executable


def pids_of_uid(uid: int) -> list[int]:
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


def task_count(uid: int) -> int:
    """Tasks (threads) of ``uid``: what RLIMIT_NPROC counts."""
    total = 0
    for pid in pids_of_uid(uid):
        try:
            total += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue
    return total


def kill_uid(uid: int) -> None:
    """SIGKILL every process of ``uid`` until none is left (children that called setsid() leave
    their process group but cannot leave the uid)."""
    if not os.path.isdir("/proc"):
        return
    for _ in range(50):
        pids = pids_of_uid(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.01)
    log.warning("sandbox uid %d still has processes after cleanup", uid)


@functools.lru_cache(maxsize=8)
def kernel_layers(python: str) -> tuple[bool, bool]:
    """Whether a uid switch and a network namespace (without bubblewrap) work on this host, probed
    once each with a trivial child; both False when not root."""
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
        os.setgid(UID_BASE - 1)
        os.setuid(UID_BASE - 1)

    unshare = libc_unshare()

    def netns() -> None:
        if unshare is None or unshare(CLONE_NEWNET) != 0:
            raise OSError("unshare(CLONE_NEWNET) failed")

    return (probe(switch), probe(netns))
