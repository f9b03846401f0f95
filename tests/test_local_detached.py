"""Detached instances on the local runtime: the per-user keeper holds them past the driver that
made them, a later driver finds them by name, only a kill ends them, and the keeper then ends."""

from __future__ import annotations

import hashlib
import os
import pathlib
import signal
import subprocess
import sys

import pytest

import yr
from tests.call_instances import Keeper
from tests.compat_instances import Quitter
from tests.instances import Counter, DetachedMaker
from tests.support import alive, wait_for
from yr import sharedmem
from yr.runtime.local import discovery

REPO = pathlib.Path(__file__).parents[1]
DEADLINE_S = 60
DETACHED = yr.InvokeOptions(cpu=100, lifetime="detached")

# A whole driver in its own process: it makes a detached instance, leaves state in it, ends.
CREATOR = """
import sys
import yr
from tests.instances import Counter

yr.init(yr.Config(num_cpus=4))
options = yr.InvokeOptions(cpu=100, name=sys.argv[1])
options.custom_extensions["lifecycle"] = "detached"  # openYuanrong's spelling
print(yr.get(Counter.options(options).invoke().add.invoke(5), timeout=60))
yr.finalize()
"""


@pytest.fixture
def keeper(tmp_path, monkeypatch):
    """A private discovery directory and a quick keeper; whatever keeper a test left is ended
    by its PID (it is no child of ours)."""
    monkeypatch.setenv("YR_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("YR_KEEPER_IDLE_SECONDS", "1")
    try:
        yield
    finally:
        if yr.is_initialized():
            yr.finalize()
        left = discovery.keeper()
        if left is not None:
            os.kill(left.pid, signal.SIGTERM)
            wait_for(lambda: not alive(left.pid), timeout=DEADLINE_S, what="the keeper to end")


def _keeper_pid() -> int:
    info = discovery.keeper()
    assert info is not None, "no keeper runs"
    return info.pid


def test_a_detached_instance_outlives_its_driver_and_a_later_driver_calls_it(keeper):
    done = subprocess.run(
        [sys.executable, "-c", CREATOR, "tally"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,  # run() kills the driver if it overruns
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "5"
    yr.init(yr.Config(num_cpus=4))
    tally = yr.get_instance("tally", timeout=10)
    assert yr.get(tally.add.invoke(2), timeout=DEADLINE_S) == 7  # the same instance
    assert yr.list_named_instances() == ["tally"]


def test_finalize_leaves_a_detached_instance_running(keeper):
    yr.init(yr.Config(num_cpus=4))
    counter = Counter.options(DETACHED.merged(name="stays")).invoke(1)
    pid = yr.get(counter.pid.invoke(), timeout=DEADLINE_S)
    yr.finalize()
    assert alive(pid)
    yr.init(yr.Config(num_cpus=4))
    again = yr.get_instance("stays", timeout=10)
    assert yr.get(again.add.invoke(1), timeout=DEADLINE_S) == 2


def test_a_detached_instance_keeps_a_large_constructor_argument_past_its_driver(keeper):
    data = os.urandom(2 * sharedmem.THRESHOLD_BYTES)  # large enough for shared memory
    yr.init(yr.Config(num_cpus=4))
    Keeper.options(DETACHED.merged(name="holder")).invoke(data)
    yr.finalize()  # this session's segments go; the detached instance must not need them
    yr.init(yr.Config(num_cpus=4))
    holder = yr.get_instance("holder", timeout=10)
    assert yr.get(holder.described.invoke(), timeout=DEADLINE_S) == (
        "bytes",
        hashlib.sha256(data).hexdigest(),
    )
    yr.kill_instance(holder)


def test_a_detached_instance_takes_and_returns_large_arrays(keeper):
    import numpy as np

    from tests.shm_instances import Store

    yr.init(yr.Config(num_cpus=4))
    store = Store.options(DETACHED.merged(name="store")).invoke()
    array = np.full(1 << 20, 2.0)  # 8 MiB each way, of another session than the keeper's
    assert yr.get(store.total.invoke(array), timeout=DEADLINE_S) == 2.0 * array.size
    assert (yr.get(store.filled.invoke(array.nbytes, 3.0), timeout=DEADLINE_S) == 3.0).all()
    yr.kill_instance(store)


def test_killing_a_detached_instance_ends_its_subtree_and_then_the_keeper(keeper):
    yr.init(yr.Config(num_cpus=4))
    parent = Quitter.options(DETACHED.merged(name="parent")).invoke()
    child_pid = yr.get(parent.start_child.invoke(), timeout=DEADLINE_S)
    parent_pid = yr.get(parent.pid.invoke(), timeout=DEADLINE_S)
    keeper_pid = _keeper_pid()
    yr.kill_instance(parent)
    wait_for(
        lambda: not alive(parent_pid) and not alive(child_pid),
        timeout=DEADLINE_S,
        what="the detached instance and its child to end",
    )
    wait_for(lambda: not alive(keeper_pid), timeout=DEADLINE_S, what="the idle keeper to end")


def test_a_detached_instance_outlives_the_instance_that_created_it(keeper):
    yr.init(yr.Config(num_cpus=4))
    maker = DetachedMaker.invoke()
    assert yr.get(maker.make.invoke("orphan"), timeout=DEADLINE_S) == 4
    maker.terminate(is_sync=True)
    orphan = yr.get_instance("orphan", timeout=10)
    assert yr.get(orphan.add.invoke(1), timeout=DEADLINE_S) == 5


def test_a_later_driver_kills_a_detached_instance_by_its_id(keeper):
    yr.init(yr.Config(num_cpus=4))
    counter = Counter.options(DETACHED.merged(name="doomed")).invoke()
    pid = yr.get(counter.pid.invoke(), timeout=DEADLINE_S)
    yr.finalize()
    yr.init(yr.Config(num_cpus=4))
    yr.kill_instance(counter.instance_id)  # never looked up by this driver
    wait_for(lambda: not alive(pid), timeout=DEADLINE_S, what="the killed instance to end")
