"""Resource groups (openYuanrong's API): reserve a team's resources all or nothing, then place
its members in the reservation, so supervisors can never hold the CPU their workers need."""

from __future__ import annotations

import concurrent.futures
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from yr import session
from yr.errors import YRError
from yr.options import MAX_CPU_MILLICORES, MAX_MEMORY_MB
from yr.resources import check_resource_map
from yr.runtime.base import RESOURCE_GROUP_STRATEGIES, Bundle, ResourceGroupSpec

# openYuanrong fills an unset or zero CPU / Memory of a bundle with these
DEFAULT_BUNDLE_CPU = 300
DEFAULT_BUNDLE_MEMORY = 128
# a group's name is a Kubernetes object name (YRResourceGroup) as well
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class ResourceGroup:
    """The handle ``yr.create_resource_group`` returns; creation does not block, ``wait`` does."""

    def __init__(self, spec: ResourceGroupSpec, bundle_specs: list[dict[str, float]]) -> None:
        self._spec = spec
        self._bundle_specs = bundle_specs

    @property
    def resource_group_name(self) -> str:
        return self._spec.name

    @property
    def bundle_specs(self) -> list[dict[str, float]]:
        return [dict(bundle) for bundle in self._bundle_specs]

    @property
    def bundle_count(self) -> int:
        return len(self._spec.bundles)

    def wait(self, timeout_seconds: int | None = None) -> None:
        """Block until every bundle is reserved; ``None`` or -1 waits forever.

        ``RuntimeError`` when the group cannot be admitted (with the runtime's reason) or the
        timeout passes first (with what the group waits for)."""
        if timeout_seconds is not None and (
            isinstance(timeout_seconds, bool) or not isinstance(timeout_seconds, int | float)
        ):
            raise TypeError(
                f"ResourceGroup.wait() timeout must be seconds, got {timeout_seconds!r}"
            )
        if timeout_seconds is not None and timeout_seconds < -1:
            raise ValueError(
                f"ResourceGroup.wait() timeout must be >= -1 (forever), got {timeout_seconds}"
            )
        timeout = None if timeout_seconds in (None, -1) else float(timeout_seconds)
        admitted = session.current().runtime.resource_group_admitted(self._spec.name)
        try:
            admitted.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            raise RuntimeError(
                f"resource group {self._spec.name!r} was not admitted within "
                f"{timeout_seconds} s: "
                f"{session.current().runtime.describe_resource_group(self._spec.name)}"
            ) from None
        except YRError as error:
            raise RuntimeError(str(error)) from error

    def __repr__(self) -> str:
        return f"ResourceGroup({self._spec.name!r}, bundles={self._bundle_specs!r})"


def create_resource_group(
    bundles: Sequence[Mapping[str, float]], name: str | None = None, strategy: str = "PACK"
) -> ResourceGroup:
    """Reserve ``bundles`` (dicts of ``CPU`` millicores, ``Memory`` MB and custom resources)
    as one group, asynchronously; place instances in it with
    ``InvokeOptions(resource_group_options=ResourceGroupOptions(name, bundle_index))``."""
    if name is None:
        name = f"rg-{uuid.uuid4().hex[:12]}"
    _check_name(name)
    if not isinstance(strategy, str) or strategy not in RESOURCE_GROUP_STRATEGIES:
        raise ValueError(
            f"create_resource_group() strategy must be one of "
            f"{', '.join(RESOURCE_GROUP_STRATEGIES)}, got {strategy!r}"
        )
    if isinstance(bundles, str | bytes) or not isinstance(bundles, Sequence) or not bundles:
        raise ValueError(
            f"create_resource_group() needs a non-empty list of bundles (dicts), got {bundles!r}"
        )
    normalized = [_normalized_bundle(index, bundle) for index, bundle in enumerate(bundles)]
    spec = ResourceGroupSpec(
        name=name, bundles=tuple(_as_bundle(b) for b in normalized), strategy=strategy
    )
    current = session.current()
    current.runtime.create_resource_group(spec, owner_id=current.owner_id)
    return ResourceGroup(spec, normalized)


def remove_resource_group(resource_group: ResourceGroup | str) -> None:
    """Release a group's reservations and end the instances placed in it."""
    if isinstance(resource_group, ResourceGroup):
        name = resource_group.resource_group_name
    elif isinstance(resource_group, str):
        name = resource_group
    else:
        raise TypeError(
            "remove_resource_group() takes a ResourceGroup or its name, "
            f"got {type(resource_group).__name__} {resource_group!r}"
        )
    _check_name(name)
    session.current().runtime.remove_resource_group(name)


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"resource group name {name!r} must be 1-63 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit (it names a Kubernetes object too)"
        )


def _normalized_bundle(index: int, bundle: Any) -> dict[str, float]:
    where = f"create_resource_group() bundle {index}"
    if not isinstance(bundle, Mapping):
        raise TypeError(f"{where} must be a dict of resource name to amount, got {bundle!r}")
    result: dict[str, float] = {}
    for key, amount in bundle.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"{where}: resource names must be non-empty strings, got {key!r}")
        if isinstance(amount, bool) or not isinstance(amount, int | float):
            raise TypeError(f"{where}[{key!r}] must be a number, got {amount!r}")
        if amount < 0:
            raise ValueError(f"{where}[{key!r}] must not be negative, got {amount!r}")
        if key not in ("CPU", "Memory") and amount == 0:
            continue  # openYuanrong filters out zero custom resources
        result[key] = amount
    result["CPU"] = result.get("CPU") or DEFAULT_BUNDLE_CPU
    result["Memory"] = result.get("Memory") or DEFAULT_BUNDLE_MEMORY
    if result["CPU"] != int(result["CPU"]) or result["CPU"] > MAX_CPU_MILLICORES:
        raise ValueError(
            f"{where}['CPU'] is in whole millicores up to {MAX_CPU_MILLICORES}, "
            f"got {result['CPU']!r}"
        )
    if result["Memory"] != int(result["Memory"]) or result["Memory"] > MAX_MEMORY_MB:
        raise ValueError(
            f"{where}['Memory'] is in whole MB up to {MAX_MEMORY_MB}, got {result['Memory']!r}"
        )
    check_resource_map(where, "custom resources", _custom(result))
    return result


def _custom(bundle: Mapping[str, float]) -> dict[str, float]:
    return {key: amount for key, amount in bundle.items() if key not in ("CPU", "Memory")}


def _as_bundle(bundle: Mapping[str, float]) -> Bundle:
    return Bundle(cpu=int(bundle["CPU"]), memory=int(bundle["Memory"]), custom=_custom(bundle))
