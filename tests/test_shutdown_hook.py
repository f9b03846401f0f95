"""``__yr_shutdown__(grace_period_seconds)`` runs on terminate and finalize, bounded by it."""

from __future__ import annotations

import pathlib

import yr
from tests.compat_instances import Tidy
from tests.support import alive, wait_for

DEADLINE_S = 60


def _grace(seconds: int) -> yr.InvokeOptions:
    return yr.InvokeOptions(cpu=100, custom_extensions={"GRACEFUL_SHUTDOWN_TIME": str(seconds)})


def test_the_shutdown_hook_runs_on_terminate_with_its_grace_period(local_runtime, tmp_path):
    marker = tmp_path / "hook-ran"
    tidy = Tidy.invoke(str(marker))
    yr.get(tidy.pid.invoke(), timeout=DEADLINE_S)
    tidy.terminate(is_sync=True)
    wait_for(marker.exists, timeout=DEADLINE_S, what="the shutdown hook's marker")
    assert marker.read_text() == "30.0"


def test_the_shutdown_hook_runs_on_finalize(tmp_path):
    marker = tmp_path / "hook-ran"
    yr.init(yr.Config(num_cpus=4))
    try:
        tidy = Tidy.options(_grace(20)).invoke(str(marker))
        yr.get(tidy.pid.invoke(), timeout=DEADLINE_S)
    finally:
        yr.finalize()
    assert marker.read_text() == "20.0"


def test_a_shutdown_hook_overrunning_its_grace_period_is_killed(local_runtime, tmp_path):
    marker: pathlib.Path = tmp_path / "never"
    tidy = Tidy.options(_grace(1)).invoke(str(marker), 3600)
    pid = yr.get(tidy.pid.invoke(), timeout=DEADLINE_S)
    tidy.terminate()
    wait_for(lambda: not alive(pid), timeout=DEADLINE_S, what="the overrunning instance to die")
    assert not marker.exists()
