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


@pytest.fixture(scope="module")
def module_local_session() -> Iterator[LocalRuntime]:
    """One local session for a whole module (see ``shared_local_runtime``)."""
    with local_session() as runtime:
        yield runtime


@pytest.fixture
def shared_local_runtime(module_local_session: LocalRuntime) -> Iterator[LocalRuntime]:
    """The module's session, for tests that do not interfere: each saves the fork server's
    start. Afterwards every instance the test started is terminated, and its process gone."""
    runtime = module_local_session
    before, spawned_before = _driver_owned(runtime), runtime.spawned_pids()
    yield runtime
    for instance_id in _driver_owned(runtime) - before:  # with its subtree
        runtime.terminate(instance_id, wait=True)
    started = runtime.spawned_pids() - spawned_before
    wait_for(lambda: all_dead(started), timeout=15, what="the test's instances to exit")


def _driver_owned(runtime: LocalRuntime) -> set[str]:
    """Every instance the driver created in the session, pending and ended ones included."""
    return {row["id"] for row in runtime.inspect()["instances"] if row["owner"] == "driver"}
