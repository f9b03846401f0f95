"""Instance classes the resource-group tests place in groups (importable by the instances)."""

from __future__ import annotations

import os

import yr
from tests.instances import Counter

ONE_CPU = yr.InvokeOptions(cpu=1000, memory=500)


def in_group(name: str, index: int = -1, *, cpu: int = 1000, **more) -> yr.InvokeOptions:
    """One CPU (by default) in bundle ``index`` of group ``name``."""
    return yr.InvokeOptions(
        cpu=cpu,
        memory=500,
        resource_group_options=yr.ResourceGroupOptions(name, index),
        **more,
    )


@yr.instance(invoke_options=ONE_CPU)
class Member:
    def pid(self) -> int:
        return os.getpid()


@yr.instance(invoke_options=ONE_CPU)
class Parent:
    """An instance with a child of its own (outside any group)."""

    def __init__(self) -> None:
        self.child = Counter.invoke()

    def pids(self) -> list[int]:
        return [os.getpid(), yr.get(self.child.pid.invoke())]


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100))
class TeamLead:
    """Reserves a group for its own team from inside an instance, then places the team in it."""

    def form_team(self, name: str, size: int, wait_s: int = 60) -> dict:
        group = yr.create_resource_group([{"CPU": 1000, "Memory": 500}] * size, name=name)
        group.wait(wait_s)
        self.team = [Member.options(in_group(name, i)).invoke() for i in range(size)]
        return {"pid": os.getpid(), "team": yr.get([m.pid.invoke() for m in self.team])}

    def reserve(self, name: str, cpu: int, wait_s: int) -> str:
        """Create a one-bundle group and wait for it: "admitted", or why it was not."""
        group = yr.create_resource_group([{"CPU": cpu, "Memory": 500}], name=name)
        try:
            group.wait(wait_s)
        except RuntimeError as error:
            return str(error)
        return "admitted"

    def place_in(self, name: str, index: int) -> int:
        return yr.get(Member.options(in_group(name, index)).invoke().pid.invoke())

    def remove(self, name: str) -> None:
        yr.remove_resource_group(name)

    def crash(self) -> None:
        os._exit(3)
