"""Custom resources on the local runtime: declared by Config, scheduled by the ledger."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import yr
from tests.instances import Counter
from tests.local_fixtures import local_session
from yr.runtime.local.ledger import CpuLedger

GPU = "example.com/gpu"


@pytest.fixture
def gpu_runtime() -> Iterator[None]:
    """A local runtime whose machine declares two GPUs."""
    with local_session(yr.Config(num_cpus=16, resources={GPU: 2})):
        yield


def with_gpus(count: int, timeout_ms: int = 30000):
    options = yr.InvokeOptions(
        cpu=100, custom_resources={GPU: count}, schedule_timeout_ms=timeout_ms
    )
    return Counter.options(options)


@pytest.mark.parametrize("name", ["gpu", "GPU/x", "kubernetes.io/gpu", "a b/c", "/gpu", "x/"])
def test_a_custom_resource_must_be_an_extended_resource_name(name):
    with pytest.raises(ValueError, match="not an extended resource name|kubernetes.io"):
        yr.InvokeOptions(custom_resources={name: 1})


@pytest.mark.parametrize("amount", [-1, 0.5, 10**7])
def test_a_custom_resource_quantity_must_be_whole_and_non_negative(amount):
    with pytest.raises(ValueError, match=r"custom_resources\['nvidia.com/gpu'\] must be a whole"):
        yr.InvokeOptions(custom_resources={"nvidia.com/gpu": amount})


def test_config_resources_follow_the_same_rules():
    with pytest.raises(ValueError, match=r"Config.resources: 'gpu' is not an extended resource"):
        yr.Config(resources={"gpu": 1})
    assert yr.Config(resources={"nvidia.com/gpu": 4}).resources == {"nvidia.com/gpu": 4}


def test_ledger_counts_custom_resources_like_cpu():
    ledger = CpuLedger(4000, {GPU: 2})
    ledger.allocate("a", 1000, {GPU: 2})
    assert not ledger.fits(1000, {GPU: 1}) and ledger.fits(1000)
    assert ledger.describe_custom({GPU: 1}) == f"{GPU}: requests 1, 0 of 2 free (held by: a 2)"
    ledger.release("a")
    assert ledger.fits(1000, {GPU: 2}) and ledger.custom_free(GPU) == 2


def test_a_custom_resource_the_machine_lacks_fails_at_once_with_the_arithmetic(gpu_runtime):
    with pytest.raises(yr.YRSchedulingError) as caught:
        with_gpus(3).invoke()
    assert f"requests {GPU}: 3 but the local runtime's whole capacity is {GPU}: 2" in str(
        caught.value
    )
    with pytest.raises(yr.YRSchedulingError, match="whole capacity is nvidia.com/gpu: 0"):
        Counter.options(yr.InvokeOptions(custom_resources={"nvidia.com/gpu": 1})).invoke()


def test_an_instance_waits_for_a_held_custom_resource_and_reports_who_holds_it(gpu_runtime):
    holder = with_gpus(2).invoke()
    assert yr.get(holder.add.invoke(1), timeout=60) == 1
    waiting = with_gpus(1, timeout_ms=500).invoke()
    with pytest.raises(yr.YRSchedulingError) as caught:
        yr.get(waiting.add.invoke(1), timeout=60)
    assert f"{GPU}: requests 1, 0 of 2 free (held by: {holder.instance_id} 2)" in str(caught.value)


def test_a_released_custom_resource_lets_the_next_instance_start(gpu_runtime):
    holder = with_gpus(2).invoke()
    assert yr.get(holder.add.invoke(1), timeout=60) == 1
    waiting = with_gpus(2).invoke()
    holder.terminate(is_sync=True)
    assert yr.get(waiting.add.invoke(5), timeout=60) == 5


def test_resources_reports_custom_capacity_and_use(gpu_runtime):
    holder = with_gpus(1).invoke()
    yr.get(holder.add.invoke(1), timeout=60)
    assert yr.resources()[0]["custom_resources"] == {GPU: {"total": 2, "used": 1, "free": 1}}
