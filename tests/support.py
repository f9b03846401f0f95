"""Helpers shared by the test suites: waiting on conditions and checking processes."""

from __future__ import annotations

import glob
import pathlib
import time
import uuid
from collections.abc import Callable, Iterable
from typing import TypeVar

import psutil

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], *, timeout: float, what: str, interval: float = 0.02) -> T:
    """Poll ``predicate`` until it returns something truthy, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def all_dead(pids: Iterable[int]) -> bool:
    return not any(alive(pid) for pid in pids)


def call_in_flight(handle, directory: pathlib.Path, *, seconds: float = 60):
    """Start ``handle.sleep_marked`` and return its ref once the call is running remotely."""
    marker = directory / f"running-{uuid.uuid4().hex}"
    ref = handle.sleep_marked.invoke(seconds, str(marker))
    wait_for(marker.exists, timeout=30, what="the call to start running in the instance")
    return ref


def assert_init_refused_starting_nothing(match: str) -> None:
    """``yr.init`` raises a ValueError matching ``match`` before starting anything: no
    session, no process, no log directory."""
    import pytest

    import yr

    before = {child.pid for child in psutil.Process().children(recursive=True)}
    directories = set(glob.glob("/tmp/yr-logs-*"))
    with pytest.raises(ValueError, match=match):
        yr.init(yr.Config(num_cpus=1))
    assert not yr.is_initialized()
    started = {child.pid for child in psutil.Process().children(recursive=True)} - before
    assert not started, "a fork server was started for a session that could not be"
    assert set(glob.glob("/tmp/yr-logs-*")) <= directories
