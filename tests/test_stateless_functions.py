"""Stateless functions (``@yr.invoke``) on the local runtime: pooled workers, same call path."""

from __future__ import annotations

import concurrent.futures
import os
import signal

import pytest

import yr
from tests.compat_instances import (
    FunctionCaller,
    add,
    add_then_double,
    pid_then_sleep,
    refuse,
    split_sign,
    worker_pid,
)
from tests.instances import Counter
from tests.support import wait_for

DEADLINE_S = 120


def test_a_stateless_function_call_returns_its_result(local_runtime):
    assert yr.get(add.invoke(1, 2), timeout=DEADLINE_S) == 3


def test_return_nums_splits_the_result_into_refs(local_runtime):
    positive, negative = split_sign.invoke(-4)
    assert yr.get([positive, negative], timeout=DEADLINE_S) == [4, -4]


def test_calls_of_one_function_reuse_pooled_worker_processes(local_runtime):
    pids = yr.get([worker_pid.invoke() for _ in range(30)], timeout=DEADLINE_S)
    pool = set(pids)
    assert len(pool) < 30
    assert pool <= set(local_runtime.pids().values())
    assert set(yr.get([worker_pid.invoke() for _ in range(30)], timeout=DEADLINE_S)) <= pool


def test_pooled_workers_hold_their_cpu_in_the_ledger(local_runtime):
    pids = set(yr.get([worker_pid.invoke() for _ in range(10)], timeout=DEADLINE_S))
    (node,) = yr.resources()
    assert node["capacity"]["CPU"] - node["allocatable"]["CPU"] == 300.0 * len(pids)


def test_options_give_a_function_other_resources(local_runtime):
    bigger = worker_pid.options(yr.InvokeOptions(cpu=2000))
    yr.get(bigger.invoke(), timeout=DEADLINE_S)
    assert 2000 in local_runtime.resources()[0]["holders"].values()


def test_a_ref_passed_to_a_function_is_resolved_first(local_runtime):
    assert yr.get(add.invoke(add.invoke(1, 2), 3), timeout=DEADLINE_S) == 6


def test_an_instance_method_can_call_a_function(local_runtime):
    caller = FunctionCaller.invoke()
    assert yr.get(caller.add_through_function.invoke(2, 5), timeout=DEADLINE_S) == 7


def test_a_function_can_call_another_function(local_runtime):
    assert yr.get(add_then_double.invoke(2, 3), timeout=DEADLINE_S) == 10


def test_a_functions_error_reaches_the_caller_as_for_methods(local_runtime):
    with pytest.raises(KeyError, match="no such key") as raised:
        yr.get(refuse.invoke("no such key"), timeout=DEADLINE_S)
    assert isinstance(raised.value, yr.YRInvokeError)


def test_a_thousand_calls_at_once_all_finish(local_runtime):
    refs = [add.invoke(i, 1) for i in range(1000)]
    assert yr.get(refs, timeout=DEADLINE_S) == [i + 1 for i in range(1000)]


def test_a_call_waiting_for_capacity_is_queued_not_failed_by_the_schedule_timeout(
    local_runtime,
):
    hog = Counter.options(yr.InvokeOptions(cpu=16_000)).invoke()
    yr.get(hog.add.invoke(), timeout=DEADLINE_S)
    impatient = add.options(yr.InvokeOptions(cpu=500, schedule_timeout_ms=100))
    queued = impatient.invoke(1, 1)
    assert yr.wait([queued], timeout=2) == ([], [queued])  # 20x its schedule timeout
    hog.terminate(is_sync=True)
    assert yr.get(queued, timeout=DEADLINE_S) == 2


def test_calling_a_function_directly_says_to_use_invoke():
    with pytest.raises(TypeError, match="add.invoke\\(...\\)"):
        add(1, 2)


def test_arguments_a_function_cannot_take_are_refused_at_invoke(local_runtime):
    with pytest.raises(TypeError, match="add\\(\\): missing a required argument: 'b'"):
        add.invoke(1)


def test_return_nums_below_one_is_refused():
    with pytest.raises(ValueError, match="return_nums must be a positive integer"):
        yr.invoke(return_nums=0)


def test_cancel_withdraws_a_call_that_has_not_started(local_runtime):
    hog = Counter.options(yr.InvokeOptions(cpu=16_000)).invoke()
    yr.get(hog.add.invoke(), timeout=DEADLINE_S)
    queued = add.invoke(1, 1)
    yr.cancel(queued)
    with pytest.raises(yr.YRCancelledError, match="withdrew call"):
        yr.get(queued, timeout=DEADLINE_S)
    hog.terminate(is_sync=True)
    assert yr.get(add.invoke(2, 2), timeout=DEADLINE_S) == 4


def test_cancel_leaves_a_finished_call_as_it_is(local_runtime):
    done = add.invoke(1, 1)
    assert yr.get(done, timeout=DEADLINE_S) == 2
    yr.cancel([done])
    assert yr.get(done, timeout=DEADLINE_S) == 2


def test_cancel_refuses_what_is_not_a_ref(local_runtime):
    with pytest.raises(TypeError, match="yr.cancel\\(\\) takes an ObjectRef"):
        yr.cancel("ref")


def _running_pid(marker) -> int:
    """The pid a ``pid_then_sleep`` call wrote once it is running in its worker."""
    text = wait_for(
        lambda: marker.exists() and marker.read_text(), timeout=60, what="the call to run"
    )
    return int(text)


def test_a_call_running_on_a_killed_worker_fails_naming_the_signal(local_runtime, tmp_path):
    marker = tmp_path / "running"
    ref = pid_then_sleep.invoke(str(marker), DEADLINE_S)
    os.kill(_running_pid(marker), signal.SIGKILL)
    with pytest.raises(yr.YRInstanceDiedError, match="SIGKILL"):
        yr.get(ref, timeout=DEADLINE_S)


def test_calls_after_a_pooled_worker_is_killed_run_on_a_new_worker(local_runtime):
    killed = yr.get(worker_pid.invoke(), timeout=DEADLINE_S)
    # Settled with the death, after the pool's own watch (registered when the worker started).
    gone = local_runtime.endpoint(_worker_of(local_runtime, killed), min_incarnation=1)
    os.kill(killed, signal.SIGKILL)
    concurrent.futures.wait([gone], timeout=30)
    assert isinstance(gone.exception(timeout=0), yr.YRInstanceDiedError)
    pids = yr.get([worker_pid.invoke() for _ in range(5)], timeout=DEADLINE_S)
    assert killed not in pids


def test_calls_after_a_pooled_worker_is_terminated_run_on_a_new_worker(local_runtime):
    pid = yr.get(worker_pid.invoke(), timeout=DEADLINE_S)
    local_runtime.terminate(_worker_of(local_runtime, pid), wait=True)
    pids = yr.get([worker_pid.invoke() for _ in range(5)], timeout=DEADLINE_S)
    assert pid not in pids


def _worker_of(local_runtime, pid: int) -> str:
    (worker,) = [i for i, p in local_runtime.pids().items() if p == pid]
    return worker
