"""A driver session's directory under /tmp, and the sweep of those whose driver died.

The directory (``/tmp/yr-logs-*``) holds the output socket, the instances' sockets for
same-machine calls, and a lock file the driver holds for its whole life; it records the
session's shared-memory prefix. A driver killed before it could clean up leaves both behind:
its fork server removes them when it sees EOF, and the next ``init()`` sweeps whatever a
session whose lock is free (its driver is dead) left.

A separate job from discovery.py: this is one session's private workspace, created with it
(mode 0700) and gone with it; the per-user runtime directory of discovery.py only announces
live sessions to the ``yr`` command.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile

from yr import sharedmem

DIRECTORY_PREFIX = "yr-logs-"
LOCK_FILE = "session.lock"  # holds the session's shared-memory prefix


class SessionDirectory:
    """Creates the directory and holds its lock until removed."""

    def __init__(self, *, shm_prefix: str) -> None:
        self.path = tempfile.mkdtemp(prefix=DIRECTORY_PREFIX)
        staging = os.path.join(self.path, LOCK_FILE + ".new")
        self._lock_fd = os.open(staging, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        os.write(self._lock_fd, shm_prefix.encode())
        # A sweeper must never find the lock file unlocked: it appears only once it is locked.
        os.rename(staging, os.path.join(self.path, LOCK_FILE))

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


def sweep_dead_sessions() -> list[str]:
    """Remove the directory and segments of every session whose driver is gone; say which."""
    parent = tempfile.gettempdir()
    swept = []
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(parent):
            if not name.startswith(DIRECTORY_PREFIX):
                continue
            path = os.path.join(parent, name)
            shm_prefix = dead_session_prefix(path)
            if shm_prefix is None:
                continue
            if shm_prefix.startswith("yr-"):
                sharedmem.discard_prefix(shm_prefix)
            shutil.rmtree(path, ignore_errors=True)
            swept.append(path)
    return swept


def dead_session_prefix(path: str) -> str | None:
    """The shared-memory prefix of the session at ``path`` if its driver is dead, else None."""
    try:
        descriptor = os.open(os.path.join(path, LOCK_FILE), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None  # not one of ours, or a driver from before this scheme: leave it
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None  # its driver holds the lock: alive
    try:
        return os.read(descriptor, 256).decode(errors="replace")
    finally:
        os.close(descriptor)
