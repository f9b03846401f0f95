"""Fate sharing, crashes and restarts on the local runtime, checked on real process ids."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

import yr
from tests.instances import Counter, FailsToStart, Node, Relay, Spawner, Supervisor
from tests.support import alive, all_dead, call_in_flight, wait_for


def test_terminating_a_subtree_root_ends_exactly_that_subtree(local_runtime):
    doomed, survivor = Node.invoke(), Node.invoke()
    doomed_pids = yr.get(doomed.grow.invoke(3))
    survivor_pids = yr.get(survivor.grow.invoke(3))
    assert len(set(doomed_pids + survivor_pids)) == 6

    doomed.terminate(is_sync=True)

    wait_for(lambda: all_dead(doomed_pids), timeout=10, what="the subtree's processes to exit")
    assert all(alive(pid) for pid in survivor_pids)
    assert yr.get(survivor.pid.invoke()) == survivor_pids[0]


def test_finalize_ends_every_instance_process(local_runtime):
    root = Node.invoke()
    pids = yr.get(root.grow.invoke(3))
    yr.finalize()
    wait_for(lambda: all_dead(pids), timeout=10, what="every instance process to exit")
    yr.init(yr.Config(num_cpus=1))  # the fixture finalizes a session of its own


def test_calls_after_finalize_are_refused(local_runtime):
    counter = Counter.invoke()
    yr.finalize()
    with pytest.raises(yr.YRNotInitializedError, match="finalize"):
        counter.add.invoke()
    yr.init(yr.Config(num_cpus=1))


def test_a_call_in_flight_when_the_process_is_killed_names_the_signal(local_runtime, tmp_path):
    counter = Counter.invoke()
    pid = yr.get(counter.pid.invoke())
    in_flight = call_in_flight(counter, tmp_path)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(yr.YRInstanceDiedError, match="SIGKILL") as caught:
        yr.get(in_flight, timeout=30)
    assert caught.value.signal == signal.SIGKILL
    assert not caught.value.will_restart
    assert counter.instance_id in str(caught.value)


def test_recover_retry_times_restarts_a_killed_instance_with_init_run_again(
    local_runtime, tmp_path
):
    retrying = yr.InvokeOptions(cpu=100, recover_retry_times=1)
    counter = Counter.options(retrying).invoke(5)
    yr.get(counter.add.invoke(1))
    first_pid = yr.get(counter.pid.invoke())
    in_flight = call_in_flight(counter, tmp_path)
    os.kill(first_pid, signal.SIGKILL)
    with pytest.raises(yr.YRInstanceDiedError, match="will be restarted"):
        yr.get(in_flight, timeout=30)

    assert yr.get(counter.add.invoke(0), timeout=30) == 5  # state rebuilt by __init__
    new_pid = yr.get(counter.init_pid.invoke())
    assert new_pid != first_pid and alive(new_pid)


def test_an_instance_dies_for_good_once_its_restarts_are_spent(local_runtime, tmp_path):
    counter = Counter.options(yr.InvokeOptions(cpu=100, recover_retry_times=1)).invoke()
    outcomes = []
    for _ in range(2):
        pid = yr.get(counter.pid.invoke(), timeout=30)
        in_flight = call_in_flight(counter, tmp_path)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(yr.YRInstanceDiedError) as caught:
            yr.get(in_flight, timeout=30)
        outcomes.append(caught.value.will_restart)
    assert outcomes == [True, False]
    with pytest.raises(yr.YRInstanceDiedError, match="will not be restarted"):
        yr.get(counter.pid.invoke(), timeout=30)


def test_a_supervisor_can_catch_a_dead_worker_and_replace_it(local_runtime, tmp_path):
    supervisor = Supervisor.invoke()
    worker_pid = yr.get(supervisor.worker_pid.invoke())
    marker = tmp_path / "worker-running"
    outcome = supervisor.work_or_replace.invoke(30, str(marker))
    wait_for(marker.exists, timeout=30, what="the supervisor's call to be running in the worker")
    os.kill(worker_pid, signal.SIGKILL)
    report = yr.get(outcome, timeout=30)
    assert report.startswith("replaced after:") and "SIGKILL" in report
    assert yr.get(supervisor.worker_pid.invoke()) != worker_pid


def test_a_crashed_owner_takes_its_children_with_it(local_runtime):
    owner = Node.options(yr.InvokeOptions(cpu=100, recover_retry_times=1)).invoke()
    pids = yr.get(owner.grow.invoke(3))
    os.kill(pids[0], signal.SIGKILL)
    wait_for(lambda: all_dead(pids[1:]), timeout=10, what="the crashed owner's children to go")
    assert yr.get(owner.pid.invoke(), timeout=30) not in pids  # restarted, alone


DRIVER = textwrap.dedent(
    """
    import sys, time
    import yr
    from tests.instances import Counter, Node
    yr.init(yr.Config(num_cpus=8))
    pids = yr.get(Node.invoke().grow.invoke(3)) + yr.get(Node.invoke().grow.invoke(2))
    print(" ".join(map(str, pids)), flush=True)
    if sys.argv[1] == "wait":
        time.sleep(600)
    elif sys.argv[1] == "get":
        yr.get(Counter.invoke().sleep.invoke(600), timeout=-1)
    """  # "exit": returns without yr.finalize(), leaving it to the atexit hook
)


@contextlib.contextmanager
def _driver(mode: str):
    """A driver process that built two trees; yields it and the pids of their instances."""
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, mode],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    try:
        pids = [int(pid) for pid in driver.stdout.readline().split()]
        assert len(pids) == 5
        yield driver, pids
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()


def test_killing_the_driver_leaves_no_instance_process_alive():
    with _driver("wait") as (driver, pids):
        helpers = [p.pid for p in psutil.Process(driver.pid).children(recursive=True)]
        driver.send_signal(signal.SIGKILL)
        driver.wait(10)
        wait_for(lambda: all_dead(pids + helpers), timeout=5, what="orphans to exit")


def test_a_driver_that_forgets_finalize_is_finalized_at_exit():
    with _driver("exit") as (driver, pids):
        assert driver.wait(30) == 0
        wait_for(lambda: all_dead(pids), timeout=10, what="the instances to exit")


def test_ctrl_c_in_a_waiting_driver_ends_its_instances():
    with _driver("get") as (driver, pids):
        driver.send_signal(signal.SIGINT)
        driver.wait(30)
        wait_for(lambda: all_dead(pids), timeout=10, what="the instances to exit")


def test_an_instance_can_terminate_what_it_created(local_runtime):
    child_pid = yr.get(Relay.invoke().create_and_terminate.invoke())
    assert not alive(child_pid)


def test_an_init_that_raises_ends_its_process_and_returns_its_cpu(local_runtime, tmp_path):
    broken = FailsToStart.invoke(str(tmp_path / "attempts"))
    with pytest.raises(ValueError, match="attempt 1 refused") as caught:
        yr.get(broken.attempt.invoke(), timeout=30)
    assert f"instance {broken.instance_id} (FailsToStart) failed to start" in str(caught.value)
    assert yr.resources()[0]["cpu_used"] == 0
    wait_for(lambda: all_dead(local_runtime.spawned_pids()), timeout=10, what="its process to end")


def test_recover_retry_times_reruns_an_init_that_raised(local_runtime, tmp_path):
    retrying = yr.InvokeOptions(cpu=100, recover_retry_times=2)
    flaky = FailsToStart.options(retrying).invoke(str(tmp_path / "attempts"), 3)
    assert yr.get(flaky.attempt.invoke(), timeout=30) == 3


def test_an_init_that_keeps_raising_fails_once_its_restarts_are_spent(local_runtime, tmp_path):
    retrying = yr.InvokeOptions(cpu=100, recover_retry_times=1)
    broken = FailsToStart.options(retrying).invoke(str(tmp_path / "attempts"))
    with pytest.raises(ValueError, match="attempt 2 refused") as caught:
        yr.get(broken.attempt.invoke(), timeout=30)
    assert "on each of 2 attempt(s)" in str(caught.value)


def test_workers_of_a_dead_owner_learn_one_truthful_reason(local_runtime, tmp_path):
    owner = Supervisor.invoke()
    worker = yr.get(owner.worker_handle.invoke())
    in_flight = call_in_flight(worker, tmp_path)
    os.kill(yr.get(owner.pid.invoke()), signal.SIGKILL)
    with pytest.raises(yr.YRInstanceDiedError) as during:
        yr.get(in_flight, timeout=30)
    with pytest.raises(yr.YRInstanceDiedError) as after:
        yr.get(worker.add.invoke(), timeout=30)
    assert str(during.value) == str(after.value)
    assert f"terminated because its owner {owner.instance_id} died" in str(during.value)
    assert "signal" not in str(during.value)


def test_yr_init_inside_an_instance_joins_its_session(local_runtime):
    child_pid = yr.get(Spawner.invoke().join_session.invoke(), timeout=60)
    assert psutil.Process(child_pid).ppid() == local_runtime.zygote_pid
    assert yr.resources()[0]["instances"] == 2
