"""The local runtime's record of one instance, and the pure pieces built from it."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from yr import sharedmem
from yr.errors import DeathInfo, YRError, YRSchedulingError
from yr.protocol.yr_pb2 import RemoteError
from yr.runtime.base import Endpoint, InstanceSpec
from yr.runtime.local.ledger import CpuLedger

DEFAULT_CPUS_PER_CORE = 4
MIN_DEFAULT_CPUS = 8
RESTART_BACKOFF_FIRST_S = 0.1
RESTART_BACKOFF_MAX_S = 5.0


def default_num_cpus() -> int:
    """Logical CPUs when the user sets none: instances mostly wait, so oversubscribe."""
    return max(MIN_DEFAULT_CPUS, DEFAULT_CPUS_PER_CORE * (os.cpu_count() or 1))


def restart_delay(restarts_done: int) -> float:
    """Seconds before restart number ``restarts_done`` (1-based): the first at once, then
    0.1 s doubling up to 5 s, so a crash loop cannot fork as fast as the machine allows."""
    if restarts_done <= 1:
        return 0.0
    return min(RESTART_BACKOFF_FIRST_S * 2 ** (restarts_done - 2), RESTART_BACKOFF_MAX_S)


@dataclass
class LocalInstance:
    """Where one instance stands: scheduling, its process, its children, how it died."""

    instance_id: str
    spec: InstanceSpec
    owner_id: str | None
    requested_at: float
    state: str = "pending"  # pending | starting | ready | restarting | dead | terminated
    incarnation: int = 0
    restarts_left: int = 0
    pid: int | None = None
    endpoint: Endpoint | None = None
    children: set[str] = field(default_factory=set)
    waiters: list[tuple[int, concurrent.futures.Future]] = field(default_factory=list)
    deaths: dict[int, DeathInfo] = field(default_factory=dict)
    error: BaseException | None = None  # set once it can never serve again
    end_reason: str = ""  # why the runtime ended it ("terminated because its owner X died")
    init_failure: RemoteError | None = None  # what its current incarnation's __init__ raised
    shutdown_hook_until: float = 0.0  # monotonic end of the __yr_shutdown__ it was given

    @property
    def ended(self) -> bool:
        """It can never serve again: dead or terminated, and ``error`` says why."""
        return self.state in ("dead", "terminated")

    @property
    def process_alive(self) -> bool:
        """Its current incarnation's process was started and has not exited."""
        return self.pid is not None and self.incarnation not in self.deaths

    @property
    def label(self) -> str:
        return f"{self.instance_id} ({self.spec.class_info.short_name})"


def drop_payload(instance: LocalInstance) -> list[Callable[[], None]]:
    """Forget the payload no incarnation will read again; what removes its segments (outside
    the lock). A process that mapped them keeps its mapping: only the names go."""
    segments = list(instance.spec.payload_buffers)
    instance.spec = dataclasses.replace(instance.spec, payload=b"", payload_buffers=())
    return [lambda: sharedmem.discard(segments)] if segments else []


def spawn_command(
    instance: LocalInstance,
    *,
    control_address: str,
    session_token: str,
    log_socket: str,
    socket_dir: str = "",
) -> dict[str, Any]:
    """What the fork server needs to start the instance's current incarnation."""
    spec = instance.spec
    env = dict(spec.options.env_vars)
    env.update(
        YR_INSTANCE_ID=instance.instance_id,
        YR_CLASS_NAME=spec.class_info.class_name,
        YR_CONTROL_ADDRESS=control_address,
        YR_SESSION_TOKEN=session_token,
    )
    return {
        "op": "spawn",
        "instance_id": instance.instance_id,
        "incarnation": instance.incarnation,
        "class_name": spec.class_info.class_name,
        "payload": spec.payload,
        "payload_buffers": list(spec.payload_buffers),  # kept for the next incarnation
        "concurrency": spec.options.concurrency,
        "shutdown_grace_s": spec.options.shutdown_grace_s(),
        "env": env,
        "log_socket": log_socket,
        "socket_dir": socket_dir,  # where it serves calls on a Unix socket ("" : gRPC only)
    }


def kill_grace_s(instance: LocalInstance) -> float:
    """How long a terminated instance gets before SIGKILL: its ``__yr_shutdown__``'s grace
    period when it has one, else none."""
    spec = instance.spec
    return spec.options.shutdown_grace_s() if spec.class_info.has_shutdown_hook else 0.0


def check_creatable(
    spec: InstanceSpec,
    owner_id: str | None,
    ledger: CpuLedger,
    instances: dict[str, LocalInstance],
    named: dict[tuple[str, str], str],
) -> None:
    """Raise, before anything is created, if the request can never be satisfied."""
    options = spec.options
    placed = options.resource_group_options.placed  # its bundle was checked, not the pool
    if not placed and options.cpu > ledger.total:
        raise YRSchedulingError(
            f"{spec.class_info.short_name} requests {options.cpu}m CPU but the local "
            f"runtime's whole capacity is {ledger.total}m; lower "
            "InvokeOptions(cpu=...) or raise yr.Config(num_cpus=...)"
        )
    impossible = ledger.never_fits(spec.class_info.short_name, options.custom_resources)
    if impossible and not placed:
        raise YRSchedulingError(impossible)
    check_owner_alive(instances, owner_id)
    if options.name and (options.namespace, options.name) in named:
        raise ValueError(
            f"an instance named {options.name!r} already exists in namespace "
            f"{options.namespace!r}; use yr.get_instance({options.name!r}) to reach it"
        )


def check_owner_alive(instances: dict[str, LocalInstance], owner_id: str | None) -> None:
    """Raise if what an instance creates (an instance, a resource group) would be owned by an
    instance that is gone: nothing would ever end it."""
    if owner_id is None:
        return
    owner = instances.get(owner_id)
    if owner is None or owner.ended:
        raise YRError(f"the creating instance {owner_id} is no longer alive")


def walk_subtree(instances: dict[str, LocalInstance], root_id: str) -> Iterator[LocalInstance]:
    """The instance and, recursively, everything it created."""
    instance = instances[root_id]
    yield instance
    for child_id in instance.children:
        yield from walk_subtree(instances, child_id)


def record_crash(
    instance: LocalInstance, *, exit_code: int | None, signal: int | None
) -> DeathInfo:
    """Record how the current incarnation died on its own, spending a restart if one is left."""
    instance.endpoint = None
    instance.pid = None  # the process is gone; a restart brings a new one
    will_restart = instance.restarts_left > 0
    if will_restart:
        instance.restarts_left -= 1
    failure, instance.init_failure = instance.init_failure, None
    death = DeathInfo(
        exit_code=exit_code,
        signal=signal,
        reason=f"its __init__ raised {failure.type_name}: {failure.message}" if failure else "",
        will_restart=will_restart,
        restarts_left=instance.restarts_left,
    )
    instance.deaths[instance.incarnation] = death
    return death


def spawn_failed_error(instance: LocalInstance, event: dict[str, Any]) -> YRError:
    return YRError(
        f"instance {instance.label} could not be started: the fork server could not fork its "
        f"process ({event['error']}); the other instances are unaffected and its CPU is released"
    )


def schedule_timeout_error(
    instance: LocalInstance, ledger: CpuLedger, waiting: int
) -> YRSchedulingError:
    """The diagnosis of an instance that waited too long for CPU: the whole arithmetic."""
    options = instance.spec.options
    custom = (
        f"; and custom resources {ledger.describe_custom(options.custom_resources)}"
        if options.custom_resources
        else ""
    )
    return YRSchedulingError(
        f"instance {instance.label} could not be scheduled within "
        f"{options.schedule_timeout_ms} ms: it requests {options.cpu}m CPU, but only "
        f"{ledger.free}m of the local runtime's {ledger.total}m is free "
        f"({ledger.used}m held by: {ledger.describe_holders()}; "
        f"{waiting} more instance(s) waiting){custom}. This is a resource deadlock "
        "when the holders wait for instances that cannot start: give supervisors less "
        "CPU (for example cpu=100), raise yr.Config(num_cpus=...), or create fewer at once"
    )
