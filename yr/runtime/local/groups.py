"""The local runtime's resource groups: all-or-nothing reservations on the CPU ledger, and which
bundle of its group each placed instance uses.

A group holds nothing until every bundle fits at once; then its whole sum is one ledger holder
(``resource-group/<name>``), so two groups that cannot both fit never hold half each. Instances
placed in a group take their share from a bundle, never from the free pool. The local runtime
is one node: every strategy (SPREAD and STRICT_SPREAD too) puts all bundles on it.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from yr.errors import YRError, YRSchedulingError
from yr.futures import settle
from yr.options import InvokeOptions
from yr.runtime.base import Bundle, ResourceGroupSpec
from yr.runtime.local.ledger import CpuLedger

HOLDER_PREFIX = "resource-group/"


def holder_name(group_name: str) -> str:
    """The group's name in the ledger (no instance id contains a '/')."""
    return f"{HOLDER_PREFIX}{group_name}"


@dataclass(frozen=True)
class Placement:
    """An instance's share of one bundle."""

    bundle_index: int
    cpu: int
    memory: int
    custom: Mapping[str, float]


@dataclass
class LocalGroup:
    """One group: its bundles, whether they are reserved, and who uses which."""

    spec: ResourceGroupSpec
    owner_id: str | None
    admitted: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    members: set[str] = field(default_factory=set)  # placed or waiting to be placed
    placements: dict[str, Placement] = field(default_factory=dict)
    reserved: bool = False  # every bundle is held on the ledger

    @property
    def name(self) -> str:
        return self.spec.name

    def cpu(self) -> int:
        return sum(bundle.cpu for bundle in self.spec.bundles)

    def memory(self) -> int:
        return sum(bundle.memory for bundle in self.spec.bundles)

    def custom(self) -> dict[str, float]:
        total: dict[str, float] = {}
        for bundle in self.spec.bundles:
            for name, amount in bundle.custom.items():
                total[name] = total.get(name, 0) + amount
        return total

    def bundle_free(self, index: int) -> Bundle:
        """What bundle ``index`` still has for new members."""
        bundle = self.spec.bundles[index]
        used = [p for p in self.placements.values() if p.bundle_index == index]
        custom = {
            name: amount - sum(p.custom.get(name, 0) for p in used)
            for name, amount in bundle.custom.items()
        }
        return Bundle(
            cpu=bundle.cpu - sum(p.cpu for p in used),
            memory=bundle.memory - sum(p.memory for p in used),
            custom=custom,
        )

    def bundle_indexes(self, wanted: int) -> Sequence[int]:
        """The bundles an instance asking for bundle ``wanted`` may use: that one, or any (-1)."""
        return range(len(self.spec.bundles)) if wanted == -1 else (wanted,)

    def room_for(self, options: InvokeOptions) -> int | None:
        """The bundle an instance with ``options`` fits in now (its own index, or the first
        with room for -1), or None."""
        for index in self.bundle_indexes(options.resource_group_options.bundle_index):
            if _fits(options, self.bundle_free(index)):
                return index
        return None


def _fits(options: InvokeOptions, bundle: Bundle) -> bool:
    return (
        options.cpu <= bundle.cpu
        and options.memory <= bundle.memory
        and all(amount <= bundle.custom.get(n, 0) for n, amount in options.custom_resources.items())
    )


def _bundle_text(bundle: Bundle) -> str:
    custom = "".join(f", {name}: {amount:g}" for name, amount in sorted(bundle.custom.items()))
    return f"{bundle.cpu}m CPU, {bundle.memory} MB memory{custom}"


def _request_text(options: InvokeOptions) -> str:
    return _bundle_text(Bundle(options.cpu, options.memory, options.custom_resources))


class ResourceGroups:
    """Every group of one local runtime; the runtime's lock guards it."""

    def __init__(self, ledger: CpuLedger) -> None:
        self._ledger = ledger
        self._groups: dict[str, LocalGroup] = {}  # creation order: the oldest fitting group first

    def get(self, name: str) -> LocalGroup:
        group = self._groups.get(name)
        if group is None:
            raise ValueError(
                f"no resource group {name!r} in this session; create it with "
                "yr.create_resource_group(bundles, name=...) first"
            )
        return group

    # -- groups -------------------------------------------------------------------------------

    def check_creatable(self, spec: ResourceGroupSpec) -> None:
        """Raise, before anything is reserved, if the group can never be admitted."""
        if spec.name in self._groups:
            raise ValueError(
                f"a resource group named {spec.name!r} already exists in this session; "
                "remove it first or choose another name"
            )
        total = self._ledger.total
        for index, bundle in enumerate(spec.bundles):
            if bundle.cpu > total:
                raise YRSchedulingError(
                    f"resource group {spec.name!r}: bundle {index} requests {bundle.cpu}m CPU "
                    f"but the local runtime's whole capacity is {total}m; lower the bundle's "
                    "'CPU' or raise yr.Config(num_cpus=...)"
                )
        group = LocalGroup(spec, owner_id=None)
        if group.cpu() > total:
            parts = " + ".join(f"{bundle.cpu}m" for bundle in spec.bundles)
            raise YRSchedulingError(
                f"resource group {spec.name!r} requests {parts} = {group.cpu()}m CPU in all "
                f"but the local runtime's whole capacity is {total}m: it could never be "
                "admitted; use fewer or smaller bundles or raise yr.Config(num_cpus=...)"
            )
        for resource, amount in sorted(group.custom().items()):
            available = self._ledger.custom_total.get(resource, 0)
            if amount > available:
                raise YRSchedulingError(
                    f"resource group {spec.name!r} requests {resource}: {amount:g} in all but "
                    f"the local runtime's whole capacity is {resource}: {available:g}; declare "
                    f"what this machine has with yr.Config(resources={{{resource!r}: N}}) or "
                    "use fewer or smaller bundles"
                )

    def add(self, spec: ResourceGroupSpec, owner_id: str | None) -> LocalGroup:
        group = LocalGroup(spec, owner_id=owner_id)
        self._groups[spec.name] = group
        return group

    def admit_what_fits(self) -> None:
        """Reserve every waiting group whose whole sum fits now, oldest first; never a part."""
        for group in self._groups.values():
            if group.reserved or not self._ledger.fits(group.cpu(), group.custom()):
                continue
            self._ledger.allocate(holder_name(group.name), group.cpu(), group.custom())
            group.reserved = True
            settle(group.admitted, result=None)

    def pop(self, name: str) -> LocalGroup:
        """Forget the group and release its reservation; the runtime ends its members."""
        group = self.get(name)
        del self._groups[name]
        self._ledger.release(holder_name(name))
        settle(group.admitted, error=YRError(f"resource group {name!r} was removed"))
        return group

    def owned_by(self, owner_id: str | None) -> list[str]:
        return [group.name for group in self._groups.values() if group.owner_id == owner_id]

    def memory_reserved(self) -> int:
        return sum(group.memory() for group in self._groups.values() if group.reserved)

    # -- members ------------------------------------------------------------------------------

    def check_placement(self, options: InvokeOptions, label: str) -> None:
        """Raise, before the instance exists, unless some bundle it names could ever hold it."""
        placement = options.resource_group_options
        group = self.get(placement.resource_group_name)
        count = len(group.spec.bundles)
        if placement.bundle_index >= count:
            raise ValueError(
                f"ResourceGroupOptions.bundle_index {placement.bundle_index} is out of range: "
                f"resource group {group.name!r} has {count} bundle(s) (0 to {count - 1}, "
                "or -1 for any)"
            )
        indexes = group.bundle_indexes(placement.bundle_index)
        if any(_fits(options, group.spec.bundles[index]) for index in indexes):
            return
        where = (
            f"bundle {placement.bundle_index} of resource group {group.name!r} has "
            f"{_bundle_text(group.spec.bundles[placement.bundle_index])}"
            if placement.bundle_index != -1
            else f"no bundle of resource group {group.name!r} is that large ("
            + "; ".join(f"{i}: {_bundle_text(b)}" for i, b in enumerate(group.spec.bundles))
            + ")"
        )
        raise YRSchedulingError(
            f"{label} requests {_request_text(options)} but {where}; lower the "
            "InvokeOptions or make the bundle larger"
        )

    def join(self, instance_id: str, options: InvokeOptions) -> None:
        self.get(options.resource_group_options.resource_group_name).members.add(instance_id)

    def place(self, instance_id: str, options: InvokeOptions) -> bool:
        """Give the instance its share of a bundle, if its group is admitted and has room."""
        group = self._groups.get(options.resource_group_options.resource_group_name)
        if group is None or not group.reserved:
            return False
        index = group.room_for(options)
        if index is None:
            return False
        group.placements[instance_id] = Placement(
            index, options.cpu, options.memory, dict(options.custom_resources)
        )
        return True

    def leave(self, instance_id: str, options: InvokeOptions) -> None:
        """The instance ended: its share of the bundle is free again."""
        group = self._groups.get(options.resource_group_options.resource_group_name)
        if group is not None:
            group.members.discard(instance_id)
            group.placements.pop(instance_id, None)

    # -- diagnosis ----------------------------------------------------------------------------

    def describe(self, name: str) -> str:
        """Why a group is (not yet) admitted, with the arithmetic."""
        group = self.get(name)
        if group.reserved:
            return f"resource group {name!r} is admitted ({group.cpu()}m CPU reserved)"
        ledger = self._ledger
        parts = " + ".join(f"{bundle.cpu}m" for bundle in group.spec.bundles)
        waiting_before = 0
        for other in self._groups.values():
            if other is group:
                break
            waiting_before += not other.reserved
        custom = (
            f"; and custom resources {ledger.describe_custom(group.custom())}"
            if group.custom()
            else ""
        )
        return (
            f"it needs all of its bundles at once, {parts} = {group.cpu()}m CPU, but only "
            f"{ledger.free}m of the local runtime's {ledger.total}m is free ({ledger.used}m "
            f"held by: {ledger.describe_holders()}; {waiting_before} older group(s) waiting)"
            f"{custom}. It is admitted once enough of that is released: end instances or "
            "remove other groups (yr.remove_resource_group)"
        )

    def placement_timeout_error(self, label: str, options: InvokeOptions) -> YRSchedulingError:
        placement = options.resource_group_options
        name = placement.resource_group_name
        prefix = (
            f"instance {label} could not be placed in resource group {name!r} within "
            f"{options.schedule_timeout_ms} ms: "
        )
        group = self._groups.get(name)
        if group is None:
            return YRSchedulingError(prefix + "the group was removed")
        if not group.reserved:
            return YRSchedulingError(prefix + "the group is not admitted; " + self.describe(name))
        free = "; ".join(
            f"bundle {i} has {_bundle_text(group.bundle_free(i))} left (used by: "
            + (
                ", ".join(m for m, p in sorted(group.placements.items()) if p.bundle_index == i)
                or "nobody"
            )
            + ")"
            for i in group.bundle_indexes(placement.bundle_index)
        )
        return YRSchedulingError(
            prefix + f"it requests {_request_text(options)}, but {free}. End a member of the "
            "group or place the instance in another bundle"
        )

    def rows(self) -> list[dict[str, Any]]:
        """Plain data for ``yr.resources()`` and the ``yr`` command."""
        return [
            {
                "name": group.name,
                "strategy": group.spec.strategy,
                "owner": group.owner_id or "driver",
                "state": "admitted" if group.reserved else "pending",
                "bundles": [
                    {
                        "CPU": bundle.cpu,
                        "Memory": bundle.memory,
                        **bundle.custom,
                        "free": _as_dict(group.bundle_free(index)),
                    }
                    for index, bundle in enumerate(group.spec.bundles)
                ],
                "members": {m: p.bundle_index for m, p in sorted(group.placements.items())},
            }
            for group in self._groups.values()
        ]


def _as_dict(bundle: Bundle) -> dict[str, float]:
    return {"CPU": bundle.cpu, "Memory": bundle.memory, **bundle.custom}
