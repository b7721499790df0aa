"""Folder locks: one process works in a run folder or a shared cache entry at a time.

A lock is an exclusive ``flock`` on the file ``<folder>/.lock``: the kernel releases it when the
process ends, however it ends (a crash or SIGKILL leaves no stale lock). On NFS, Linux carries
``flock`` as a whole-file POSIX lock through the lock manager (since kernel 2.6.12), so processes on
different machines of a cluster exclude each other too (Lustre needs its ``flock`` mount option).
The lock file stays, empty; it is not part of any result (a process refused after taking the
lock removes the file if it created it). The holder named in a refusal is the kernel's record
of the lock (``/proc/locks``).

Two ways to take one: :func:`folder_lock` with ``wait=True`` (a shared expert cache entry: the
second process waits for the first to finish the training, then reuses it) or ``wait=False`` (a
run folder named by the user: the second command is refused at once, naming the holder).
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from moegs_bench.errors import UserInputError

LOCK_FILE = ".lock"


class FolderBusyError(UserInputError):
    """Another process holds the folder's lock."""


class HeldLock:
    """The lock held inside :func:`folder_lock`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.remove_on_release = False  # unlink the lock file before releasing (a refused start)


@contextmanager
def folder_lock(folder: Path, *, wait: bool, what: str = "folder",
                on_wait: Callable[[str], None] | None = None, poll_seconds: float = 0.5) -> Iterator[HeldLock]:
    """Hold the lock of ``folder`` (created when missing) for the body of the ``with``.

    ``wait=False``: raise :class:`FolderBusyError` when another process holds it. ``wait=True``:
    call ``on_wait`` once with a message naming the holder, then wait until the lock is free. A
    lock file removed by its holder (:attr:`HeldLock.remove_on_release`) while another process
    waited on it is detected (its inode is no longer the path's) and the lock taken again.
    """
    folder = Path(folder)
    path = folder / LOCK_FILE
    told = False
    while True:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)  # (flock needs no write access)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            message = f"{folder}: another process{_holder(fd)} is working in this {what}"
            os.close(fd)
            if not wait:
                raise FolderBusyError(f"{message}; wait for it to finish or choose another --out / --name") from None
            if not told and on_wait is not None:
                on_wait(f"{message}; waiting for it to finish")
                told = True
            time.sleep(poll_seconds)
            continue
        if _same_file(fd, path):
            break
        os.close(fd)  # the holder removed the file while we waited: lock the current one
    held = HeldLock(path)
    try:
        yield held
    finally:
        if held.remove_on_release:
            path.unlink(missing_ok=True)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _holder(fd: int) -> str:
    """`` (pid N)``: the process holding the lock on ``fd``'s file, as the kernel lists it in
    ``/proc/locks`` (Linux; empty where that is unavailable, e.g. a holder on another NFS client).
    Nothing is written into the lock file: a refused or reporting process changes nothing."""
    st = os.fstat(fd)
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            for line in f:
                parts = line.split()  # 1: FLOCK ADVISORY WRITE <pid> <maj:min:inode> 0 EOF
                if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == device and parts[4].isdigit():
                    return f" (pid {parts[4]})"
    except OSError:
        pass
    return ""
