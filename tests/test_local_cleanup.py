"""Nothing an instance or a session starts outlives it: child processes, shared memory, logs."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import pytest

import yr
from tests.instances import Spawner
from tests.support import alive, all_dead, wait_for

REPO = pathlib.Path(__file__).resolve().parent.parent


def test_an_instances_own_processes_end_when_it_is_terminated(local_runtime):
    spawner = Spawner.invoke()
    sleeper = yr.get(spawner.start_sleeper.invoke())
    spawner.terminate(is_sync=True)
    wait_for(lambda: not alive(sleeper), timeout=10, what="the instance's child to end")


def test_an_instances_own_processes_end_when_it_crashes(local_runtime):
    spawner = Spawner.invoke()
    sleeper = yr.get(spawner.start_sleeper.invoke())
    os.kill(yr.get(spawner.pid.invoke()), signal.SIGKILL)
    wait_for(lambda: not alive(sleeper), timeout=10, what="the crashed instance's child to end")


def test_an_instances_own_processes_end_at_finalize(local_runtime):
    sleeper = yr.get(Spawner.invoke().start_sleeper.invoke())
    yr.finalize()
    wait_for(lambda: not alive(sleeper), timeout=10, what="the instance's child to end")
    yr.init(yr.Config(num_cpus=1))  # the fixture finalizes a session of its own


DRIVER = textwrap.dedent(
    """
    import os, time
    import numpy
    import yr
    from tests.instances import Counter, Spawner
    from tests.support import wait_for

    yr.init(yr.Config(num_cpus=8))
    runtime = yr.session.current().runtime
    sleeper = yr.get(Spawner.invoke().start_sleeper.invoke())
    busy = Counter.invoke()
    busy.sleep.invoke(600)
    # Queued behind the sleep, its 64 MiB argument waits in shared memory.
    busy.fill.invoke(numpy.zeros(8 << 20), 1.0)
    prefix = runtime._shm_prefix
    wait_for(
        lambda: any(name.startswith(prefix) for name in os.listdir("/dev/shm")),
        timeout=60,
        what="the argument's segment",
    )
    print(runtime.zygote_pid, sleeper, prefix, runtime._directory.path, flush=True)
    time.sleep(600)
    """
)


@contextlib.contextmanager
def _driver():
    """A driver with an instance child process and a 64 MiB segment; yields what it reports."""
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        zygote, sleeper, prefix, directory = driver.stdout.readline().split()
        yield driver, int(zygote), int(sleeper), prefix, directory
    finally:
        if driver.poll() is None:
            driver.kill()
        driver.wait()
        driver.stdout.close()


def _segments(prefix: str) -> list[str]:
    return [name for name in os.listdir("/dev/shm") if name.startswith(prefix + "-")]


def _gone(prefix: str, directory: str) -> bool:
    return not _segments(prefix) and not os.path.exists(directory)


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_driver_leaves_no_process_shared_memory_or_log_directory(signum):
    with _driver() as (driver, zygote, sleeper, prefix, directory):
        assert _segments(prefix) and os.path.isdir(directory)
        driver.send_signal(signum)
        driver.wait(10)
        wait_for(lambda: _gone(prefix, directory), timeout=15, what="the session's leftovers")
        wait_for(lambda: all_dead([zygote, sleeper]), timeout=10, what="its processes to end")


def test_init_sweeps_what_a_session_killed_with_its_fork_server_left_behind():
    with _driver() as (driver, zygote, sleeper, prefix, directory):
        try:
            # Nothing of that session may run its cleanup: stop the driver, kill the fork
            # server (its instances die with it), then the driver.
            driver.send_signal(signal.SIGSTOP)
            os.kill(zygote, signal.SIGKILL)
            wait_for(lambda: not alive(zygote), timeout=10, what="the fork server to die")
            driver.kill()
            driver.wait(10)
            assert _segments(prefix) and os.path.isdir(directory)
            yr.init(yr.Config(num_cpus=1))
            try:
                assert _gone(prefix, directory)
            finally:
                yr.finalize()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(sleeper, signal.SIGKILL)  # an orphan of a fork server killed -9
