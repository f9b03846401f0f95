"""Pytest fixtures for the local runtime: a session per test that leaves no process behind."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

import yr
from tests.support import all_dead, wait_for
from yr.runtime.local.runtime import LocalRuntime


@contextlib.contextmanager
def local_session(config: yr.Config | None = None) -> Iterator[LocalRuntime]:
    """``yr.init(config)`` on the local runtime; on leaving, ``yr.finalize()`` and wait until
    the fork server and every instance the session started are gone."""
    yr.init(config or yr.Config(num_cpus=16))
    runtime = yr.session.current().runtime
    assert isinstance(runtime, LocalRuntime)
    started: set[int] = {runtime.zygote_pid}
    try:
        yield runtime
    finally:
        started |= runtime.spawned_pids()
        yr.finalize()
        wait_for(lambda: all_dead(started), timeout=15, what="the session's processes to exit")


@pytest.fixture
def local_runtime() -> Iterator[LocalRuntime]:
    """``yr.init`` on the local runtime; afterwards every process it started must be gone."""
    with local_session() as runtime:
        yield runtime
