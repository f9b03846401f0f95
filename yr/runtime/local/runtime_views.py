"""What LocalRuntime tells about itself: its capacity and use (``yr.resources()``), the session
view and instance output for the ``yr`` command, and process ids for tests and tooling."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from yr.errors import YRError
from yr.runtime import node_resources

if TYPE_CHECKING:
    from yr.runtime.local.groups import ResourceGroups
    from yr.runtime.local.instances import LocalInstance
    from yr.runtime.local.ledger import CpuLedger
    from yr.runtime.local.output import OutputForwarder
    from yr.runtime.local.waits import WaitGraph


class RuntimeViews:
    """A part of ``LocalRuntime`` (a mixin): read-only views of the runtime's state below, each
    taken under its lock."""

    waits: WaitGraph
    _lock: threading.RLock
    _ledger: CpuLedger
    _groups: ResourceGroups
    _instances: dict[str, LocalInstance]
    _pending: list[str]
    _spawned_pids: set[int]
    _output: OutputForwarder

    def resources(self) -> list[dict[str, Any]]:
        with self._lock:
            memory_held = self._groups.memory_reserved() + sum(
                self._instances[holder].spec.options.memory
                for holder in self._ledger.holders()
                if holder in self._instances
            )
            capacity = {"CPU": self._ledger.total, "Memory": node_resources.physical_memory_mb()}
            allocatable = {"CPU": self._ledger.free, "Memory": capacity["Memory"] - memory_held}
            return [
                {
                    **node_resources.entry(
                        "local", ready=True, capacity=capacity, allocatable=allocatable
                    ),
                    "node": "local",
                    "cpu_total": self._ledger.total,
                    "cpu_used": self._ledger.used,
                    "cpu_free": self._ledger.free,
                    "instances": sum(1 for i in self._instances.values() if not i.ended),
                    "pending": len(self._pending),
                    "holders": self._ledger.holders(),
                    "custom_resources": self._ledger.custom_resources(),
                    "resource_groups": self._groups.rows(),
                }
            ]

    def inspect(self) -> dict[str, Any]:
        """Every instance of the session as plain data, for the ``yr`` command."""
        from yr.runtime.local.snapshot import session_view

        with self._lock:
            return session_view(
                self._instances.values(),
                self._ledger,
                self.waits,
                now=time.monotonic(),
                resource_groups=self._groups.rows(),
            )

    def log_lines(self, instance_id: str, *, after: int = 0) -> tuple[list, bool]:
        """What ``instance_id`` printed (numbered above ``after``) and whether it has ended."""
        with self._lock:
            instance = self._instances.get(instance_id)
            if instance is None:
                raise YRError(f"no instance {instance_id} in this session")
            ended = instance.ended
        return self._output.book.lines(instance_id, after=after), ended

    def pids(self) -> dict[str, int]:
        """Process ids of the live instances (for tests and tooling)."""
        with self._lock:
            return {
                i.instance_id: i.pid
                for i in self._instances.values()
                if i.pid is not None and not i.ended
            }

    def spawned_pids(self) -> set[int]:
        """Every instance process this runtime ever started, dead or alive."""
        with self._lock:
            return set(self._spawned_pids)
