"""The bubblewrap (bwrap) jail of one sandboxed run: its command line, and which way of starting it
works on this host (probed once per interpreter)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from thinktwice.verify.hostproc import UID_BASE, world_usable

__all__ = ["HOME_DIR", "WORK_DIR", "BwrapSupport", "Mode", "bwrap_argv", "bwrap_support", "data_fd", "drop_to"]

Mode = Literal["userns", "privileged"]
"""``userns``: bwrap runs as the run's uid (a throw-away one when we are root) and builds its
namespaces inside a new user namespace; needs unprivileged user namespaces and an interpreter that
uid can reach. ``privileged``: we are root, bwrap runs as root without a user namespace, and the
interpreter switches to the throw-away uid before the candidate's code is read."""

WORK_DIR = "/sandbox"  # the code's cwd and TMPDIR inside the jail: a private tmpfs
HOME_DIR = "/home/sandbox"  # HOME inside the jail: another private tmpfs
_SYSTEM_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/localtime")  # dynamic-loader cache, time zone


@dataclass(frozen=True, slots=True)
class BwrapSupport:
    """Whether and how bwrap can start a jail here; ``reason`` says why not when ``mode`` is None."""

    executable: str | None
    mode: Mode | None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.executable is not None and self.mode is not None


def _system_binds() -> list[str]:
    """/usr read-only, the merged-/usr links (or read-only binds where /bin, /lib... are real
    directories), and the two /etc files the interpreter benefits from. No other host path."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in _SYSTEM_DIRS:
        p = Path("/") / name
        if p.is_symlink():
            args += ["--symlink", os.readlink(p), str(p)]
        elif p.is_dir():
            args += ["--ro-bind", str(p), str(p)]
    for f in _SYSTEM_FILES:
        args += ["--ro-bind-try", f, f]
    return args


def _python_binds(python: str) -> list[str]:
    """A read-only bind of the interpreter's installation when it lives outside /usr (pyenv, uv...)."""
    prefix = Path(os.path.realpath(python)).parent.parent  # <prefix>/bin/python3.x
    system = [Path("/usr")] + [Path("/", d) for d in _SYSTEM_DIRS]
    if prefix == Path("/") or any(prefix == d or d in prefix.parents for d in system):
        return []
    # bwrap would give the parents the host's modes (e.g. /root 0700) and a dropped uid could not
    # reach the library: make them plain traversable directories first
    args: list[str] = []
    for parent in reversed(prefix.parents[:-1]):
        args += ["--perms", "0755", "--dir", str(parent)]
    return [*args, "--ro-bind", str(prefix), str(prefix)]


def bwrap_argv(executable: str, mode: Mode, python: str, *, files: Mapping[str, int], tmpfs_bytes: int,
               info_fd: int | None = None) -> list[str]:
    """The bwrap command line up to ``--``: new pid, ipc, net, uts, mount (and cgroup) namespaces,
    system directories read-only, private tmpfs /tmp, /dev/shm, home and work dir (each at most
    ``tmpfs_bytes``), ``files`` (name -> readable fd, so no host path) read-only in the work dir, its own
    /proc and a minimal /dev, killed with its parent, in a new session (no terminal injection)."""
    args = [executable, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc",
            "--unshare-net", "--unshare-uts", "--unshare-cgroup-try", "--hostname", "sandbox"]
    if mode == "userns":
        args += ["--unshare-user", "--disable-userns"]
    else:  # root keeps every capability in bwrap unless told; the interpreter needs only these two
        args += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    args += _system_binds() + _python_binds(python)
    args += ["--proc", "/proc", "--dev", "/dev"]
    for d in ("/tmp", "/dev/shm", HOME_DIR, WORK_DIR):
        args += ["--size", str(tmpfs_bytes), "--perms", "1777", "--tmpfs", d]
    for name, fd in files.items():
        args += ["--perms", "0444", "--ro-bind-data", str(fd), f"{WORK_DIR}/{name}"]
    args += ["--chdir", WORK_DIR]
    if info_fd is not None:
        args += ["--info-fd", str(info_fd)]
    return [*args, "--"]


def drop_to(uid: int) -> Callable[[], None]:
    """A pre-exec function that makes the child ``uid`` (group ``uid``, no supplementary groups)."""

    def child() -> None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)

    return child


def data_fd(text: str) -> int:
    """A readable file descriptor holding ``text`` and no name on the host (a memfd where possible).
    Lone surrogates are kept as (invalid) UTF-8, so such a program fails to compile, not to start."""
    data = text.encode("utf-8", "surrogatepass")
    try:
        fd = os.memfd_create("thinktwice-sandbox", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        with tempfile.TemporaryFile() as f:  # unlinked at once; the duplicate keeps it alive
            fd = os.dup(f.fileno())
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _probe(executable: str, mode: Mode, python: str) -> str | None:
    """Start the real jail once with a trivial program; None when it worked, else why not."""
    root = os.geteuid() == 0
    uid = UID_BASE - 2 if root else os.getuid()
    drop = f"import os\nos.setgroups([]); os.setgid({uid}); os.setuid({uid})\n"
    code = drop if mode == "privileged" else ""
    # json: the library is readable after the drop; probe.txt: files reach the work dir by fd
    code += "import json\nprint(os.getuid(), os.getcwd(), open('probe.txt').read())"
    fd = data_fd("ok")
    argv = bwrap_argv(executable, mode, python, files={"probe.txt": fd}, tmpfs_bytes=1 << 20)
    argv += [python, "-I", "-S", "-c", "import os\n" + code]
    pre = drop_to(uid) if (mode == "userns" and root) else None
    try:
        r = subprocess.run(argv, preexec_fn=pre, capture_output=True, timeout=30, check=False, cwd="/",
                           env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, stdin=subprocess.DEVNULL,
                           pass_fds=(fd,))
    except (OSError, subprocess.SubprocessError) as e:
        return f"{mode}: {e}"
    finally:
        os.close(fd)
    if r.returncode == 0 and r.stdout.decode(errors="replace").split() == [str(uid), WORK_DIR, "ok"]:
        return None
    last = (r.stderr.decode(errors="replace").strip().splitlines() or [f"exit status {r.returncode}"])[-1]
    return f"{mode}: {last}"


@functools.lru_cache(maxsize=4)
def bwrap_support(python: str) -> BwrapSupport:
    """How bwrap can jail ``python`` here. As root: ``userns`` when a throw-away uid can reach the
    interpreter, else (or when user namespaces are off) ``privileged``; otherwise ``userns``."""
    exe = shutil.which("bwrap")
    if exe is None:
        return BwrapSupport(None, None, "bubblewrap (bwrap) is not installed")
    root = os.geteuid() == 0
    modes: list[Mode] = []
    if not root or world_usable(python):
        modes.append("userns")
    if root:
        modes.append("privileged")
    errors = []
    for mode in modes:
        err = _probe(exe, mode, python)
        if err is None:
            return BwrapSupport(exe, mode, f"bwrap ({mode})")
        errors.append(err)
    return BwrapSupport(exe, None, "bwrap cannot start a sandbox here (" + "; ".join(errors) + ")")
