"""Claims on runs and evaluations, so that two ``decnn reproduce`` processes split a recipe's work.

A claim is a lock file beside the folder (``.lock-<name>``) holding the claiming process's pid, created
atomically. A lock whose process has ended (gone, or a zombie waiting to be reaped) is stale and is taken over.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

# A lock file is empty only between its creation and the pid being written; one left empty this long belongs
# to a process that died in between.
EMPTY_LOCK_GRACE_S = 60.0


def lock_path(folder: Path) -> Path:
    return folder.parent / f".lock-{folder.name}"


def claim(folder: Path) -> bool:
    """Take the run for this process (a lock file holding our pid); False if another live process holds it."""
    lock = lock_path(folder)
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        if _held(lock):
            return False
        lock.unlink(missing_ok=True)  # stale lock of a process that has ended
        return claim(folder)
    with os.fdopen(fd, "w") as handle:
        handle.write(str(os.getpid()))
    return True


def release(folder: Path) -> None:
    lock_path(folder).unlink(missing_ok=True)


def _held(lock: Path) -> bool:
    """Whether the process named in ``lock`` is still running."""
    try:
        text = lock.read_text().strip()
        if not text:
            return time.time() - lock.stat().st_mtime < EMPTY_LOCK_GRACE_S
        pid = int(text)
    except FileNotFoundError:
        return False  # released while we looked
    except ValueError:
        return False  # not a pid: not ours to respect
    return pid_alive(pid)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process. A zombie (state Z in /proc/<pid>/stat) has exited: not alive."""
    if pid <= 0:
        return False
    if _is_zombie(pid):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's process
    return True


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # no /proc (not Linux), or the process is gone: os.kill decides
    # "pid (comm) state ...": comm may hold spaces and parentheses, so the state follows the last ')'.
    fields = stat.rpartition(")")[2].split()
    return bool(fields) and fields[0] == "Z"
