"""Claims of `decnn reproduce` across processes and hosts: owner records, leases, renewal, stale locks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from decnn_cli.experiments.reproduce import locking
from decnn_cli.experiments.reproduce.locking import claim, holder, lock_path
from decnn_cli.results import _owner_record, _proc_stat

HERE = socket.gethostname()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "runs" / "digits__standard__abc__seed0"
    path.parent.mkdir()
    return path


def age(lock: Path, seconds: float) -> None:
    """Make ``lock`` look last renewed ``seconds`` ago."""
    then = time.time() - seconds
    os.utime(lock, (then, then))


def test_a_claim_records_host_pid_start_time_and_lease(folder: Path):
    with claim(folder, lease_s=30) as held:
        assert lock_path(folder).read_text() == f"{_owner_record()}lease 30\n"
        pid, host, start = lock_path(folder).read_text().splitlines()[0].split()
        assert (int(pid), host) == (os.getpid(), HERE) and start != "-"
        assert claim(folder) is None  # held by a live process of this host (this one)
        assert holder(folder) == _owner_record().strip()
        assert held.held()
    assert not lock_path(folder).exists() and holder(folder) is None
    assert not list(folder.parent.iterdir())  # no temporary file left beside it


def test_a_lock_of_this_host_is_stale_once_its_process_has_ended(folder: Path):
    lock_path(folder).write_text(f"1 {HERE} -\nlease 600\n")  # pid 1 is alive
    assert claim(folder) is None
    lock_path(folder).write_text(f"999999999 {HERE} -\nlease 600\n")  # no such process, even with a fresh lock
    with claim(folder) as held:
        assert held.held()
    # Its pid reused by a later process (another start time): the owner has ended.
    lock_path(folder).write_text(f"{os.getpid()} {HERE} 1\nlease 600\n")
    assert claim(folder) is not None


def test_a_lock_held_by_another_users_process_is_respected(folder: Path, monkeypatch):
    lock_path(folder).write_text(f"4242 {HERE} -\nlease 600\n")

    def not_permitted(pid: int, signal: int) -> None:
        raise PermissionError  # what os.kill says of a live process that belongs to another user

    monkeypatch.setattr(os, "kill", not_permitted)
    assert claim(folder) is None
    assert lock_path(folder).read_text() == f"4242 {HERE} -\nlease 600\n"


def test_a_lock_from_another_host_is_respected_until_its_lease_ends_and_taken_after(folder: Path):
    theirs = "4242 node-17 8812345\nlease 2\n"  # pid 4242 may not exist here: that says nothing of node-17
    lock_path(folder).write_text(theirs)
    age(lock_path(folder), 1.5)  # renewed 1.5 s ago, lease 2 s
    assert claim(folder) is None and lock_path(folder).read_text() == theirs
    assert holder(folder) == "4242 node-17 8812345"
    age(lock_path(folder), 2.5)  # not renewed for longer than its lease: its process is taken to be dead
    assert holder(folder) is None
    with claim(folder) as held:
        assert lock_path(folder).read_text() == held.content != theirs
    # Without a lease line the lock has the default lease.
    lock_path(folder).write_text("4242 node-17 8812345\n")
    age(lock_path(folder), locking.LEASE_S / 2)
    assert claim(folder) is None
    age(lock_path(folder), locking.LEASE_S + 1)
    assert claim(folder) is not None


def test_a_claim_is_renewed_while_held_so_another_host_never_takes_it(folder: Path, monkeypatch):
    held = claim(folder, lease_s=0.3)  # renewed every 0.1 s
    try:
        age(lock_path(folder), 0.25)
        time.sleep(0.4)
        assert time.time() - lock_path(folder).stat().st_mtime < 0.25  # renewed meanwhile
        monkeypatch.setattr(socket, "gethostname", lambda: "node-17")  # from here on, we look from another host
        for _ in range(5):
            assert claim(folder, lease_s=0.3) is None
            time.sleep(0.1)
        # The holder dies without releasing (its renewals stop): after one lease the other host takes the run.
        held._stop.set()
        held._renewer.join()
        age(lock_path(folder), 0.5)
        taken = claim(folder, lease_s=0.3)
        assert taken is not None and "node-17" in lock_path(folder).read_text()
    finally:
        monkeypatch.undo()
    held.release()  # a lock taken over is no longer ours: releasing leaves it alone
    assert lock_path(folder).read_text() == taken.content
    taken.release()
    assert not lock_path(folder).exists()


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="process states are read from /proc (Linux)")
def test_a_lock_held_by_a_zombie_process_is_stale(folder: Path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        # Not yet reaped, the exited child stays in the process table as a zombie: os.kill(pid, 0) still succeeds.
        for _ in range(200):
            if _proc_stat(child.pid)[0] == "Z":
                break
            time.sleep(0.05)
        else:
            pytest.fail("the child process did not exit")
        os.kill(child.pid, 0)  # the pid still exists
        lock_path(folder).write_text(f"{child.pid} {HERE} {_proc_stat(child.pid)[19]}\nlease 600\n")
        with claim(folder) as held:
            assert lock_path(folder).read_text() == held.content
        lock_path(folder).write_text(str(child.pid))  # an older decnn's lock: a bare pid, of this host
        assert claim(folder) is not None
    finally:
        child.wait()


def test_an_older_decnns_bare_pid_lock_is_judged_by_its_process(folder: Path):
    lock_path(folder).write_text("1")
    assert claim(folder) is None
    lock_path(folder).write_text("999999999")
    assert claim(folder) is not None


def test_an_unreadable_lock_is_respected_for_a_grace_period(folder: Path):
    lock_path(folder).write_text("")  # an older decnn between creating its lock and writing its pid
    assert claim(folder) is None
    age(lock_path(folder), locking.UNREADABLE_LOCK_GRACE_S + 1)
    assert claim(folder) is not None


def test_a_stale_lock_that_changed_meanwhile_is_left_in_place(folder: Path):
    lock = lock_path(folder)
    lock.write_text(f"999999999 {HERE} -\nlease 600\n")
    seen = locking._look(lock)
    fresh = f"{os.getpid()} {HERE} {_proc_stat(os.getpid())[19]}\nlease 600\n"
    lock.write_text(fresh)  # another process took it over between our look and our move
    locking._take_over(lock, seen)
    assert lock.read_text() == fresh
    assert [p.name for p in folder.parent.iterdir()] == [lock.name]
