"""Suite-wide fixtures: the local runtime, the local cluster, and the no-stray-process rule."""

from __future__ import annotations

from collections.abc import Iterator

import psutil
import pytest

from tests.support import wait_for

pytest_plugins = ["tests.local_fixtures", "tests.cluster.fixtures", "tests.cluster.tools"]


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
