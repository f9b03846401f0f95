"""Crash loops on the local runtime back off instead of forking as fast as they can."""

from __future__ import annotations

import os
import signal

import pytest

import yr
from tests.instances import Counter
from tests.support import call_in_flight
from yr.runtime.local.instances import restart_delay


def test_the_first_restart_is_immediate_and_later_ones_back_off_up_to_five_seconds():
    assert [restart_delay(n) for n in range(1, 9)] == [0.0, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0]


def test_an_instance_restarts_three_times_then_dies_for_good(local_runtime, tmp_path):
    counter = Counter.options(yr.InvokeOptions(cpu=100, recover_retry_times=3)).invoke()
    pids = []
    for _ in range(4):
        pid = yr.get(counter.pid.invoke(), timeout=30)
        pids.append(pid)
        in_flight = call_in_flight(counter, tmp_path)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(yr.YRInstanceDiedError):
            yr.get(in_flight, timeout=30)
    assert len(set(pids)) == 4
    with pytest.raises(yr.YRInstanceDiedError, match="will not be restarted"):
        yr.get(counter.pid.invoke(), timeout=30)


def test_a_wait_for_a_later_incarnation_outlives_a_restart_and_ends_with_the_death(
    local_runtime,
):
    counter = Counter.options(yr.InvokeOptions(cpu=100, recover_retry_times=1)).invoke()
    first = yr.get(counter.pid.invoke(), timeout=30)
    (instance_id,) = [i for i, pid in local_runtime.pids().items() if pid == first]
    beyond_last = local_runtime.endpoint(instance_id, min_incarnation=2)
    os.kill(first, signal.SIGKILL)
    second = local_runtime.endpoint(instance_id, min_incarnation=1).result(timeout=30)
    assert second.incarnation == 1 and not beyond_last.done()
    local_runtime.terminate(instance_id, wait=True)
    with pytest.raises(yr.YRError, match="terminated"):
        beyond_last.result(timeout=30)
