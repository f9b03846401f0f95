"""LocalRuntime's resource-group methods: the Runtime contract over ``ResourceGroups``, and
ending a group's members when the group goes (removed, or its owner ended)."""

from __future__ import annotations

import concurrent.futures
import threading
from typing import TYPE_CHECKING

from yr.errors import YRError
from yr.futures import settle
from yr.runtime.local.instances import check_owner_alive

if TYPE_CHECKING:
    from yr.runtime.base import ResourceGroupSpec
    from yr.runtime.local.groups import ResourceGroups
    from yr.runtime.local.instances import LocalInstance


class ResourceGroupMethods:
    """A part of ``LocalRuntime`` (a mixin): it uses the runtime's lock and state below, and its
    ``_check_open``, ``_schedule`` and ``_terminate_locked``."""

    _lock: threading.RLock
    _changed: threading.Condition
    _groups: ResourceGroups
    _instances: dict[str, LocalInstance]

    def _remove_owned_groups(self, owner_id: str | None, *, why: str) -> None:
        for name in self._groups.owned_by(owner_id):
            self._remove_group_locked(name, reason=f"its owner {owner_id or 'the driver'} {why}")

    def _remove_group_locked(self, name: str, *, reason: str) -> None:
        group = self._groups.pop(name)
        for member in sorted(group.members):
            self._terminate_locked(
                member, reason=f"terminated because its resource group {name!r} was {reason}"
            )
        self._schedule()
        self._changed.notify_all()

    def create_resource_group(self, spec: ResourceGroupSpec, *, owner_id: str | None) -> None:
        with self._lock:
            self._check_open()
            self._groups.check_creatable(spec)
            check_owner_alive(self._instances, owner_id)
            self._groups.add(spec, owner_id)
            self._schedule()
            self._changed.notify_all()

    def resource_group_admitted(self, name: str) -> concurrent.futures.Future:
        # A future of the caller's own: cancelling it (a client that gave up) leaves the group be.
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            try:
                admitted = self._groups.get(name).admitted
            except ValueError as error:
                future.set_exception(YRError(str(error)))
                return future
        admitted.add_done_callback(lambda done: settle(future, result=None, error=done.exception()))
        return future

    def remove_resource_group(self, name: str) -> None:
        with self._lock:
            self._groups.get(name)
            self._remove_group_locked(name, reason="removed")

    def describe_resource_group(self, name: str) -> str:
        with self._lock:
            return self._groups.describe(name)
