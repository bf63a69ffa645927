"""Claims on runs and evaluations, so that processes on one machine or many split a recipe's work.

A claim is a lock file beside the folder (``.lock-<name>``). Its first line is the owner record of partial run
folders (``pid host start-time``, ``results._owner_record``), its second the lease in seconds; it is created with
its content at once (written aside, then hard-linked into place, which is atomic on NFS too), and renewed (its
modification time set to now) every lease/3 seconds by a daemon thread for as long as the claim is held. A lock is
stale, and taken over, when

- it is of this host and its process has ended: gone, a zombie, or its pid now belongs to a later process;
- it is of another host and has not been renewed for a whole lease (the process there cannot be asked; the hosts'
  clocks are taken to agree to well within a lease, as NTP keeps them).

A process that is alive but stalls for longer than its lease (a suspended job) may therefore lose its claim to a
process on another host; the lease is long (``LEASE_S``) so that only a dead process's claim lapses.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from decnn_cli.results import _owner_gone, _owner_record

# How long a claim outlives its last renewal in the eyes of other hosts (seconds). It is renewed every third of
# that, so a process must stall for two renewals before its claim is at risk.
LEASE_S = 600.0
# A lock whose content cannot be read as an owner (an older decnn's lock between its creation and the pid being
# written, or a damaged file) is respected for this long after its last change.
UNREADABLE_LOCK_GRACE_S = 60.0


def lock_path(folder: Path) -> Path:
    return folder.parent / f".lock-{folder.name}"


@dataclass
class Claim:
    """A held lock: renewed in the background until ``release()`` (or the end of a ``with`` block)."""

    lock: Path
    content: str
    lease_s: float
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _renewer: threading.Thread | None = field(default=None, repr=False)

    def start_renewing(self) -> None:
        self._renewer = threading.Thread(target=self._renew, name=f"renew {self.lock.name}", daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            if not self.held():
                return  # taken over after a stall: the claim is lost, and the lock is no longer ours to touch
            now = time.time()
            with contextlib.suppress(OSError):
                os.utime(self.lock, (now, now))

    def held(self) -> bool:
        """Whether the lock file is still this claim's."""
        try:
            return self.lock.read_text() == self.content
        except OSError:
            return False

    def release(self) -> None:
        """Stop renewing and remove the lock, unless another process has taken it over meanwhile."""
        self._stop.set()
        if self._renewer is not None and self._renewer is not threading.current_thread():
            self._renewer.join()
        if self.held():
            self.lock.unlink(missing_ok=True)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def claim(folder: Path, lease_s: float = LEASE_S) -> Claim | None:
    """Take ``folder`` for this process: a renewed lock file naming this process; None if another live claim holds
    it. A stale lock (see the module's docstring) is taken over."""
    lock = lock_path(folder)
    lock.parent.mkdir(parents=True, exist_ok=True)
    content = f"{_owner_record()}lease {lease_s:g}\n"
    while True:
        if _create(lock, content):
            held = Claim(lock, content, lease_s)
            held.start_renewing()
            return held
        seen = _look(lock)
        if seen is None:
            continue  # released while we looked: try again
        if not _stale(*seen):
            return None
        _take_over(lock, seen)


def holder(folder: Path) -> str | None:
    """The owner record (``pid host start``) of the live claim on ``folder``; None when it is free or stale."""
    seen = _look(lock_path(folder))
    if seen is None or _stale(*seen):
        return None
    return seen[0].splitlines()[0] if seen[0].strip() else "unknown"


def _create(lock: Path, content: str) -> bool:
    """Create ``lock`` holding ``content`` unless it exists; whoever looks sees it whole or not at all."""
    aside = lock.with_name(f"{lock.name}.{secrets.token_hex(4)}.new")
    aside.write_text(content)
    try:
        os.link(aside, lock)
        return True
    except FileExistsError:
        return False
    except OSError:  # a filesystem without hard links: create exclusively, then write
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            handle.write(content)
        return True
    finally:
        aside.unlink(missing_ok=True)


def _look(lock: Path) -> tuple[str, float] | None:
    """The lock's content and last renewal (modification time); None if there is no lock."""
    try:
        return lock.read_text(), lock.stat().st_mtime
    except FileNotFoundError:
        return None


def _parse(content: str) -> tuple[str, float] | None:
    """``(owner record, lease)`` of a lock's content; None if it names no owner. A lock of an older decnn holds a
    bare pid: it was written on this host (those versions knew no other), with no lease."""
    lines = content.strip().splitlines()
    if not lines:
        return None
    fields = lines[0].split()
    if len(fields) == 1 and fields[0].isdigit():
        return f"{fields[0]} {socket.gethostname()} -", LEASE_S
    if len(fields) != 3 or not fields[0].isdigit():
        return None
    lease = LEASE_S
    for line in lines[1:]:
        key, _, value = line.partition(" ")
        if key == "lease":
            with contextlib.suppress(ValueError):
                lease = float(value)
    return lines[0], lease


def _stale(content: str, renewed: float) -> bool:
    """Whether a lock (its content, and its last renewal as a Unix time) may be taken over."""
    parsed = _parse(content)
    if parsed is None:
        return time.time() - renewed > UNREADABLE_LOCK_GRACE_S
    record, lease = parsed
    if record.split()[1] == socket.gethostname():
        return _owner_gone(record)
    return time.time() - renewed > lease


def _take_over(lock: Path, seen: tuple[str, float]) -> None:
    """Remove the stale lock ``seen``; one that has changed since (a new claim, or a renewal) is left in place."""
    aside = lock.with_name(f"{lock.name}.{secrets.token_hex(4)}.stale")
    try:
        os.replace(lock, aside)
    except FileNotFoundError:
        return
    if _look(aside) == seen:
        aside.unlink(missing_ok=True)
        return
    # It changed between our look and the move: put it back (unless yet another claim was made meanwhile).
    with contextlib.suppress(OSError):
        os.link(aside, lock)
    aside.unlink(missing_ok=True)
