"""One cgroup per sandboxed run: a memory (and task) ceiling for its whole process tree, and a sure kill.

cgroup v2 needs a delegated subtree (our cgroup may enable ``memory`` and ``pids`` for children);
v1 needs a writable ``memory`` hierarchy (root in most containers). Otherwise none. Under v1 the
task ceiling stays with RLIMIT_NPROC: each hierarchy joined costs the child an RCU grace period
(5-15 ms here), and a throw-away uid already bounds the run's tasks exactly.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import signal
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RunCgroup", "cgroup_parents", "create_run_cgroup"]

log = logging.getLogger(__name__)

_CONTROLLERS = ("memory", "pids")  # v2: one directory has both
_V1_CONTROLLERS = ("memory",)
_PREFIX = "thinktwice-sbx-"
_STALE_S = 60.0  # an empty run cgroup this old was left by a killed parent (a live one holds tasks)


@dataclass(frozen=True, slots=True)
class _Parents:
    """Where run cgroups are created: one directory (v2) or one per controller (v1)."""

    version: int
    dirs: dict[str, Path]


def _mounts(mountinfo: str) -> list[tuple[str, Path, str, set[str]]]:
    """(root, mount point, fstype, super options) of every cgroup mount in ``mountinfo``."""
    out = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        out.append((fields[3], Path(fields[4].replace("\\040", " ")), tail[0], set(tail[2].split(","))))
    return out


def _under(mount_root: str, path: str) -> str | None:
    """``path`` (from /proc/self/cgroup) relative to a mount whose root is ``mount_root``."""
    if mount_root == "/":
        return path.lstrip("/")
    if path == mount_root or path.startswith(mount_root.rstrip("/") + "/"):
        return path[len(mount_root):].lstrip("/")
    return None


def _locate(proc_cgroup: str, mountinfo: str) -> _Parents | None:
    """Our own cgroup directories for the controllers we need (v2 preferred), from the two files."""
    paths: dict[str, str] = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        names = parts[1].split(",") if parts[1] else ["<v2>"]
        for n in names:
            paths[n] = parts[2]
    mounts = _mounts(mountinfo)
    for root, point, fstype, _ in mounts:
        if fstype == "cgroup2" and "<v2>" in paths:
            rel = _under(root, paths["<v2>"])
            if rel is None:
                continue
            d = point / rel
            try:
                available = set((d / "cgroup.controllers").read_text().split())
            except OSError:
                continue
            if set(_CONTROLLERS) <= available:
                return _Parents(2, {"": d})
    dirs: dict[str, Path] = {}
    for ctl in _V1_CONTROLLERS:
        for root, point, fstype, opts in mounts:
            if fstype == "cgroup" and ctl in opts and ctl in paths:
                rel = _under(root, paths[ctl])
                if rel is not None:
                    dirs[ctl] = point / rel
                    break
    return _Parents(1, dirs) if set(dirs) == set(_V1_CONTROLLERS) else None


@functools.lru_cache(maxsize=1)
def cgroup_parents() -> _Parents | None:
    """Where this process may create run cgroups, or None (probed once: mkdir of a child)."""
    try:
        found = _locate(Path("/proc/self/cgroup").read_text(), Path("/proc/self/mountinfo").read_text())
    except OSError:
        return None
    if found is None:
        return None
    if found.version == 2:
        d = found.dirs[""]
        try:
            enabled = set((d / "cgroup.subtree_control").read_text().split())
            if not set(_CONTROLLERS) <= enabled:
                # fails (EBUSY) when our cgroup holds processes and is not the hierarchy's root
                (d / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in _CONTROLLERS))
        except OSError as e:
            log.debug("cgroup v2 at %s cannot delegate memory/pids: %s", d, e)
            return None
    probe = f"thinktwice-probe-{secrets.token_hex(4)}"
    try:
        for d in found.dirs.values():
            (d / probe).mkdir()
            (d / probe).rmdir()
    except OSError as e:
        log.debug("cannot create cgroups under %s: %s", list(found.dirs.values()), e)
        return None
    return found


class RunCgroup:
    """The cgroup(s) of one run: join with :attr:`procs_files`, then :meth:`close` when done."""

    def __init__(self, version: int, dirs: dict[str, Path]) -> None:
        self.version = version
        self.dirs = dirs

    @property
    def procs_files(self) -> tuple[str, ...]:
        """The ``cgroup.procs`` files a child writes its pid into (before exec) to join."""
        return tuple(str(d / "cgroup.procs") for d in self.dirs.values())

    def _read(self, ctl: str, name: str) -> str:
        try:
            return (self.dirs[ctl if self.version == 1 else ""] / name).read_text()
        except OSError:
            return ""

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer ended in this cgroup."""
        text = self._read("memory", "memory.oom_control" if self.version == 1 else "memory.events")
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
        return 0

    def pids(self) -> list[int]:
        """Processes still in the cgroup."""
        out: set[int] = set()
        for d in self.dirs.values():
            try:
                out.update(int(x) for x in (d / "cgroup.procs").read_text().split())
            except (OSError, ValueError):
                continue
        return sorted(out)

    def kill(self, wait_s: float = 5.0) -> bool:
        """SIGKILL everything in the cgroup until it is empty (True) or ``wait_s`` passed."""
        deadline = time.monotonic() + wait_s
        while True:
            pids = self.pids()
            if not pids:
                return True
            if time.monotonic() > deadline:
                return False
            if self.version == 2:
                try:
                    (self.dirs[""] / "cgroup.kill").write_text("1")
                except OSError:
                    pass  # kernels before 5.14: the loop below signals each process
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.005)

    def close(self) -> None:
        """Kill what is left and remove the directories (a warning names any that stays)."""
        if not self.kill():
            log.warning("sandbox cgroup still has processes after cleanup: %s", self.pids())
        for d in self.dirs.values():
            for _ in range(200):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.005)  # the last tasks are still leaving
            else:
                log.warning("could not remove sandbox cgroup %s", d)


def _prune_stale(parent: Path) -> None:
    """Remove empty run cgroups left behind by parents that were killed before cleaning up."""
    now = time.time()
    try:
        entries = [e for e in os.scandir(parent)
                   if e.name.startswith(_PREFIX) and e.is_dir(follow_symlinks=False)]
    except OSError:
        return
    for e in entries:
        try:
            if now - e.stat(follow_symlinks=False).st_mtime > _STALE_S:
                os.rmdir(e.path)  # refused (EBUSY) while any task is inside
        except OSError:
            continue


def create_run_cgroup(memory_bytes: int, max_tasks: int) -> RunCgroup | None:
    """A fresh cgroup limited to ``memory_bytes`` (no swap) and, under v2, ``max_tasks`` tasks; or None."""
    parents = cgroup_parents()
    if parents is None:
        return None
    for d in parents.dirs.values():
        _prune_stale(d)
    name = f"{_PREFIX}{secrets.token_hex(6)}"
    dirs = {ctl: d / name for ctl, d in parents.dirs.items()}
    cg = RunCgroup(parents.version, {})
    try:
        for ctl, d in dirs.items():
            d.mkdir()
            cg.dirs[ctl] = d
        if parents.version == 2:
            d = dirs[""]
            (d / "memory.max").write_text(str(memory_bytes))
            if (d / "memory.swap.max").exists():
                (d / "memory.swap.max").write_text("0")
            (d / "pids.max").write_text(str(max_tasks))
        else:
            (dirs["memory"] / "memory.limit_in_bytes").write_text(str(memory_bytes))
            memsw = dirs["memory"] / "memory.memsw.limit_in_bytes"
            if memsw.exists():  # only with swap accounting; must not be below the plain limit
                memsw.write_text(str(memory_bytes))
    except OSError as e:
        log.warning("could not set up a sandbox cgroup (%s); running without one", e)
        cg.close()
        return None
    return cg
