"""Instances with ``async def`` methods: one event loop per instance, concurrency bounds calls."""

from __future__ import annotations

import pytest

import yr
from tests.call_instances import Mirror
from tests.compat_instances import AsyncCounter, AsyncPair
from tests.support import wait_for
from yr.runtime.local.runtime import LocalRuntime


@pytest.fixture
def local_runtime(shared_local_runtime: LocalRuntime) -> LocalRuntime:
    """This module's tests do not interfere: they share one session, each cleaned up after."""
    return shared_local_runtime


DEADLINE_S = 30


def test_a_call_awaiting_does_not_block_another_call_of_the_same_instance(local_runtime):
    pair = AsyncPair.invoke()
    # Up first, so the waiting call goes alone: a batch is answered when all its calls are.
    assert yr.get(pair.is_waiting.invoke(), timeout=DEADLINE_S) is False
    waiting = pair.wait_for_signal.invoke()
    wait_for(
        lambda: yr.get(pair.is_waiting.invoke(), timeout=DEADLINE_S),
        timeout=DEADLINE_S,
        what="the first call to be awaiting",
    )
    yr.get(pair.give_signal.invoke(), timeout=DEADLINE_S)
    assert yr.get(waiting, timeout=DEADLINE_S) == "signalled"


def test_every_call_of_an_async_instance_runs_on_the_same_event_loop(local_runtime):
    pair = AsyncPair.invoke()
    for _ in range(3):
        assert yr.get(pair.same_loop_as_before.invoke(), timeout=DEADLINE_S)


def test_concurrency_bounds_the_async_calls_in_flight(local_runtime):
    counter = AsyncCounter.invoke()
    yr.get([counter.hold.invoke(0.2) for _ in range(6)], timeout=DEADLINE_S)
    assert 1 <= yr.get(counter.peak_in_flight.invoke(), timeout=DEADLINE_S) <= 2


def test_an_async_method_can_await_a_ref(local_runtime):
    pair, mirror = AsyncPair.invoke(), Mirror.invoke()
    assert yr.get(pair.awaits_a_ref.invoke(mirror), timeout=DEADLINE_S) == "pong"
