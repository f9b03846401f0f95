"""Pytest fixtures for the local runtime: a session per test that leaves no process behind."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import yr
from tests.support import all_dead, wait_for
from yr.runtime.local.runtime import LocalRuntime


@pytest.fixture
def local_runtime() -> Iterator[LocalRuntime]:
    """``yr.init`` on the local runtime; afterwards every process it started must be gone."""
    yr.init(yr.Config(num_cpus=16))
    runtime = yr.session.current().runtime
    assert isinstance(runtime, LocalRuntime)
    started: set[int] = {runtime.zygote_pid}
    try:
        yield runtime
    finally:
        started |= runtime.spawned_pids()
        yr.finalize()
        wait_for(lambda: all_dead(started), timeout=15, what="the session's processes to exit")
