"""Large arguments travel through shared memory on one machine, and leave nothing behind."""

from __future__ import annotations

import os

import numpy as np
import pytest

import yr
from tests.instances import Counter
from yr import sharedmem


def _segments() -> list[str]:
    return [name for name in os.listdir(sharedmem.SHM_DIRECTORY) if name.startswith("yr-")]


def test_a_large_array_argument_arrives_intact(local_runtime):
    counter = Counter.invoke()
    array = np.arange(4 * 1024 * 1024, dtype=np.float64)  # 32 MiB
    echoed = yr.get(counter.echo.invoke(array))
    assert echoed.shape == array.shape and np.array_equal(echoed, array)


def test_a_large_argument_leaves_no_shared_memory_behind(local_runtime):
    counter = Counter.invoke()
    before = set(_segments())
    yr.get([counter.echo.invoke(np.ones(1 << 20)) for _ in range(3)])
    assert set(_segments()) == before


def test_an_instance_may_modify_its_copy_of_a_shared_argument(local_runtime):
    counter = Counter.invoke()
    array = np.zeros(1 << 20)
    assert yr.get(counter.fill.invoke(array, 2.0)) == 2.0 * array.size
    assert not array.any()  # the caller's array is untouched


def test_only_yr_segment_names_are_opened():
    with pytest.raises(ValueError, match="not a yr shared-memory segment"):
        sharedmem.open_buffers(["../../etc/passwd"])
