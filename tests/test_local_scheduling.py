"""CPU scheduling on the local runtime: waiting, failing fast, and diagnosing deadlocks."""

from __future__ import annotations

import time

import pytest

import yr
from tests.instances import Counter, GreedySupervisor


@pytest.fixture
def four_cpus():
    yr.init(yr.Config(num_cpus=4))
    try:
        yield yr.session.current().runtime
    finally:
        yr.finalize()


def test_a_request_larger_than_the_whole_capacity_fails_at_once(four_cpus):
    with pytest.raises(yr.YRSchedulingError, match="5000m CPU but .* capacity is 4000m"):
        Counter.options(yr.InvokeOptions(cpu=5000)).invoke()
    assert yr.resources()[0]["instances"] == 0


def test_an_instance_that_does_not_fit_waits_for_capacity(four_cpus):
    big = yr.InvokeOptions(cpu=3000)
    first = Counter.options(big).invoke()
    yr.get(first.add.invoke())
    second = Counter.options(big).invoke()
    waiting = second.add.invoke()
    assert not yr.wait([waiting], timeout=0.5)[0]
    first.terminate()
    assert yr.get(waiting, timeout=30) == 1


def test_supervisors_holding_the_cpu_get_a_diagnosis_not_a_hang(four_cpus):
    started = time.monotonic()
    supervisors = [GreedySupervisor.invoke() for _ in range(3)]
    with pytest.raises(yr.YRSchedulingError) as caught:
        yr.get([s.start.invoke(3) for s in supervisors], timeout=60)
    message = str(caught.value)
    assert time.monotonic() - started < 30
    assert "could not be scheduled within 3000 ms" in message
    assert "requests 1000m CPU" in message
    assert "of the local runtime's 4000m is free" in message
    assert "greedysupervisor-" in message and "resource deadlock" in message


def test_a_pending_instance_that_is_terminated_never_starts(four_cpus):
    big = yr.InvokeOptions(cpu=3000)
    first = Counter.options(big).invoke()
    yr.get(first.add.invoke())
    second = Counter.options(big).invoke()  # pending: 1000m of 4000m free
    second.terminate()
    assert four_cpus.resources()[0]["pending"] == 0
    first.terminate()  # its CPU is free again, and nobody may take it
    assert four_cpus.resources()[0]["cpu_used"] == 0
