"""What an instance that has ended asks the local runtime to create is refused: nothing would
ever end it (an owner's end is what ends the instances and groups it created)."""

from __future__ import annotations

import pytest

import yr
from tests.instances import Counter
from yr.errors import YRError
from yr.runtime.base import Bundle, ClassInfo, InstanceSpec, ResourceGroupSpec


def ended_instance(local_runtime) -> str:
    counter = Counter.options(yr.InvokeOptions(cpu=100)).invoke()
    yr.get(counter.add.invoke())
    local_runtime.terminate(counter.instance_id, wait=True)
    return counter.instance_id


def test_an_ended_instance_cannot_create_an_instance(local_runtime):
    owner = ended_instance(local_runtime)
    spec = InstanceSpec(ClassInfo("tests.instances.Counter"), b"", yr.InvokeOptions(cpu=100))
    with pytest.raises(YRError, match=f"the creating instance {owner} is no longer alive"):
        local_runtime.create(spec, owner_id=owner)
    assert [row["owner"] for row in local_runtime.inspect()["instances"]] == ["driver"]


def test_an_ended_instance_cannot_create_a_resource_group(local_runtime):
    owner = ended_instance(local_runtime)
    spec = ResourceGroupSpec("team", (Bundle(cpu=1000, memory=128),))
    with pytest.raises(YRError, match=f"the creating instance {owner} is no longer alive"):
        local_runtime.create_resource_group(spec, owner_id=owner)
    assert local_runtime.resources()[0]["resource_groups"] == []
