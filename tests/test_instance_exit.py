"""``yr.exit()`` inside an instance ends it cleanly, its subtree with it."""

from __future__ import annotations

import pytest

import yr
from tests.compat_instances import Quitter
from tests.support import alive, wait_for

DEADLINE_S = 60


def test_yr_exit_ends_the_instance_and_its_caller_learns_it_exited(local_runtime):
    quitter = Quitter.invoke()
    pid = yr.get(quitter.pid.invoke(), timeout=DEADLINE_S)
    with pytest.raises(yr.YRError, match="ended by its own yr.exit\\(\\)"):
        yr.get(quitter.quit.invoke(), timeout=DEADLINE_S)
    wait_for(lambda: not alive(pid), timeout=DEADLINE_S, what="the exited instance's process")


def test_yr_exit_is_not_a_crash_to_recover_from(local_runtime):
    quitter = Quitter.invoke()  # recover_retry_times=2
    yr.wait([quitter.quit.invoke()], timeout=DEADLINE_S)
    with pytest.raises(yr.YRError, match="ended by its own yr.exit\\(\\)"):
        yr.get(quitter.pid.invoke(), timeout=DEADLINE_S)


def test_yr_exit_takes_the_instances_subtree_with_it(local_runtime):
    quitter = Quitter.invoke()
    child_pid = yr.get(quitter.start_child.invoke(), timeout=DEADLINE_S)
    yr.wait([quitter.quit.invoke()], timeout=DEADLINE_S)
    wait_for(lambda: not alive(child_pid), timeout=DEADLINE_S, what="the child to end")


def test_yr_exit_in_the_driver_says_to_use_finalize(local_runtime):
    with pytest.raises(yr.YRError, match="a driver ends with yr.finalize\\(\\)"):
        yr.exit()
