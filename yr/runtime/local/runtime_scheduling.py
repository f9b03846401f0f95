"""LocalRuntime's scheduling and state changes: placing pending instances (on the CPU ledger or
in their resource group's bundle), spawning them, expiring those that wait too long, and failing
or terminating an instance, which releases what it held and settles whoever waits on it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from yr.errors import DeathInfo, YRError, YRInstanceDiedError
from yr.futures import settle
from yr.runtime.local.instances import (
    LocalInstance,
    drop_payload,
    kill_grace_s,
    schedule_timeout_error,
    spawn_command,
)

if TYPE_CHECKING:  # the runtime's parts this one uses, created by LocalRuntime
    from yr.runtime.local.control import ControlServer
    from yr.runtime.local.groups import ResourceGroups
    from yr.runtime.local.ledger import CpuLedger
    from yr.runtime.local.output import OutputForwarder
    from yr.runtime.local.process import ZygoteProcess


class Scheduling:
    """A part of ``LocalRuntime`` (a mixin): it uses the runtime's lock and state below, and its
    ``_remove_owned_groups``."""

    session_token: str
    _lock: threading.RLock
    _changed: threading.Condition
    _closed: bool
    _ledger: CpuLedger
    _groups: ResourceGroups
    _instances: dict[str, LocalInstance]
    _named: dict[tuple[str, str], str]
    _pending: list[str]
    _zygote: ZygoteProcess
    _control: ControlServer
    _output: OutputForwarder
    _socket_dir: str

    def _schedule(self) -> None:
        self._groups.admit_what_fits()  # whole groups first: they never hold a part
        for instance_id in list(self._pending):
            instance = self._instances[instance_id]
            options = instance.spec.options
            if options.resource_group_options.placed:
                # its bundle's reservation, never the free pool
                if not self._groups.place(instance_id, options):
                    continue
            elif self._ledger.fits(options.cpu, options.custom_resources):
                self._ledger.allocate(instance_id, options.cpu, options.custom_resources)
            else:
                continue
            self._pending.remove(instance_id)
            self._spawn(instance)

    def _spawn(self, instance: LocalInstance) -> None:
        instance.state = "starting"
        self._zygote.send(
            spawn_command(
                instance,
                control_address=self._control.address,
                session_token=self.session_token,
                log_socket=self._output.path,
                socket_dir=self._socket_dir,
            )
        )

    def _expire_pending(self) -> None:
        with self._lock:
            while not self._closed:
                now = time.monotonic()
                next_deadline = None
                for instance_id in list(self._pending):
                    instance = self._instances[instance_id]
                    deadline = (
                        instance.requested_at + instance.spec.options.schedule_timeout_ms / 1e3
                    )
                    if deadline <= now:
                        self._pending.remove(instance_id)  # first: the error counts the rest
                        failing = self._fail(instance, self._schedule_timeout_error(instance))
                        # Safe under our lock: the client's callbacks never wait for it
                        # while holding a lock of their own.
                        for notify in failing:
                            notify()
                    elif next_deadline is None or deadline < next_deadline:
                        next_deadline = deadline
                wait = None if next_deadline is None else max(next_deadline - now, 0.01)
                self._changed.wait(wait)

    def _schedule_timeout_error(self, instance: LocalInstance) -> YRError:
        options = instance.spec.options
        if options.resource_group_options.placed:
            return self._groups.placement_timeout_error(instance.label, options)
        return schedule_timeout_error(instance, self._ledger, len(self._pending))

    def _release_waiters(self, instance: LocalInstance) -> list[Callable[[], None]]:
        ready = [future for minimum, future in instance.waiters if minimum <= instance.incarnation]
        instance.waiters = [w for w in instance.waiters if w[0] > instance.incarnation]
        endpoint = instance.endpoint
        return [lambda f=future: settle(f, result=endpoint) for future in ready]

    def _fail(
        self, instance: LocalInstance, error: BaseException, *, state: str = "dead"
    ) -> list[Callable[[], None]]:
        instance.state = state
        instance.error = error
        instance.endpoint = None
        if instance.instance_id in self._pending:
            self._pending.remove(instance.instance_id)
        # It will never start again: keep the record (callers may still ask), not the payload.
        release = drop_payload(instance)
        self._ledger.release(instance.instance_id)
        options = instance.spec.options
        if options.resource_group_options.placed:
            self._groups.leave(instance.instance_id, options)
        if (
            options.name
            and self._named.get((options.namespace, options.name)) == instance.instance_id
        ):
            del self._named[(options.namespace, options.name)]
        waiters, instance.waiters = instance.waiters, []
        self._schedule()
        self._changed.notify_all()
        return release + [lambda f=future: settle(f, error=error) for _, future in waiters]

    def _terminate_locked(self, instance_id: str, *, reason: str) -> None:
        """Stop an instance and its subtree; ``reason`` completes "instance X was ..."."""
        instance = self._instances.get(instance_id)
        if instance is None or instance.ended:
            return
        for child_id in list(instance.children):
            self._terminate_locked(child_id, reason=f"terminated with its owner {instance_id}")
        self._remove_owned_groups(instance_id, why="ended")
        was_running = instance.state in ("starting", "ready")  # "restarting" has no process
        instance.end_reason = reason
        error: YRError = YRError(f"instance {instance.label} was {reason}")
        if "owner" in reason:  # the same words whichever way a caller learns of it
            error = YRInstanceDiedError(
                instance_id, instance.spec.class_info.class_name, DeathInfo(reason=reason)
            )
        for notify in self._fail(instance, error, state="terminated"):
            notify()
        if was_running:
            grace_s = kill_grace_s(instance)
            self._zygote.send({"op": "kill", "instance_id": instance_id, "grace_s": grace_s})
            if grace_s:
                instance.shutdown_hook_until = time.monotonic() + grace_s
        owner = self._instances.get(instance.owner_id or "")
        if owner is not None:
            owner.children.discard(instance_id)
