"""Helpers shared by the test suites: waiting on conditions and checking processes."""

from __future__ import annotations

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
