"""Suite-wide fixtures: the local runtime, the local cluster, and the no-stray-process rule."""

from __future__ import annotations

import glob
from collections.abc import Iterator

import psutil
import pytest

from tests.support import wait_for
from yr.runtime.local.sessiondir import dead_session_prefix

pytest_plugins = [
    "tests.local_fixtures",
    "tests.cluster.fixtures",
    "tests.cluster.tools",
    "tests.cluster.operated",
]


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """After the whole run, nothing the tests started may still be running."""
    yield

    def survivors() -> list[str]:
        return [
            f"{child.pid} {' '.join(child.cmdline())[:120]}"
            for child in psutil.Process().children(recursive=True)
            if child.is_running() and child.status() != psutil.STATUS_ZOMBIE
        ]

    try:
        wait_for(lambda: not survivors(), timeout=20, what="the tests' processes to exit")
    except AssertionError:
        pytest.fail(f"processes left behind by the tests: {survivors()}")


def _session_leftovers() -> set[str]:
    return set(glob.glob("/dev/shm/yr-*")) | set(glob.glob("/tmp/yr-logs-*"))


@pytest.fixture(scope="session", autouse=True)
def no_shared_memory_or_log_directory_left_behind() -> Iterator[None]:
    """After the whole run, no /dev/shm/yr-* segment or /tmp/yr-logs-* directory it created.

    Other yr sessions may run on the machine meanwhile: a directory whose driver still holds its
    lock, and the segments named after that session, are theirs.
    """
    before = _session_leftovers()
    yield

    def leaked() -> list[str]:
        new = _session_leftovers() - before
        directories = {path for path in new if path.startswith("/tmp/")}
        live_prefixes = {_prefix_of_live_session(path) for path in glob.glob("/tmp/yr-logs-*")} - {
            None
        }
        left = [path for path in directories if dead_session_prefix(path) is not None]
        left += [
            path
            for path in new - directories
            if path.removeprefix("/dev/shm/").rsplit("-", 1)[0] not in live_prefixes
        ]
        return sorted(left)

    try:
        wait_for(lambda: not leaked(), timeout=20, what="the tests' sessions to clean up")
    except AssertionError:
        pytest.fail(f"shared memory or log directories left behind by the tests: {leaked()}")


def _prefix_of_live_session(path: str) -> str | None:
    """The shared-memory prefix of a session whose driver is alive (it holds the lock)."""
    if dead_session_prefix(path) is not None:
        return None
    try:
        with open(f"{path}/session.lock") as handle:
            return handle.read()
    except OSError:
        return None
