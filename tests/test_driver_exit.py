"""A driver exits at once (Ctrl-C, sys.exit, end of script) while a call runs, ending its tree."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.support import all_dead, wait_for

EXIT_DEADLINE_S = 30  # the remote call runs for 120 s: a driver that waits for it fails

SCRIPT = textwrap.dedent(
    """
    import sys
    import yr
    from tests.instances import Counter

    yr.init(yr.Config(num_cpus=4))
    counter = Counter.invoke()
    print("instance", yr.get(counter.pid.invoke()), flush=True)
    ref = counter.sleep.invoke(120)
    ending = sys.argv[1]
    if ending == "wait":
        print("waiting", flush=True)
        yr.get(ref, timeout=-1)
    elif ending == "exit":
        try:
            yr.get(ref, timeout=0.2)
        except yr.YRTimeoutError:
            sys.exit(3)
    elif ending == "raise":
        raise RuntimeError("the driver gave up")
    """
)


def _start(ending: str) -> tuple[subprocess.Popen, int]:
    driver = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, ending],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        start_new_session=True,
    )
    line = driver.stdout.readline()
    assert line.startswith("instance "), line + driver.stderr.read()
    return driver, int(line.split()[1])


def _finish(driver: subprocess.Popen, instance_pid: int) -> str:
    try:
        driver.wait(EXIT_DEADLINE_S)
    except subprocess.TimeoutExpired:
        driver.kill()
        driver.wait()
        pytest.fail(f"the driver did not exit within {EXIT_DEADLINE_S} s while a call ran")
    finally:
        wait_for(lambda: all_dead([instance_pid]), timeout=30, what="the instance to end")
    return driver.stderr.read()


@pytest.mark.parametrize("ending", ["end", "exit", "raise"])
def test_the_driver_exits_at_once_while_a_call_runs(ending):
    driver, instance_pid = _start(ending)
    _finish(driver, instance_pid)
    assert all_dead([instance_pid])


def test_ctrl_c_ends_the_driver_at_once_without_thread_noise():
    driver, instance_pid = _start("wait")
    assert driver.stdout.readline().strip() == "waiting"
    driver.send_signal(signal.SIGINT)
    stderr = _finish(driver, instance_pid)
    assert "KeyboardInterrupt" in stderr
    assert stderr.count("Traceback") == 1 and "Exception ignored" not in stderr, stderr
