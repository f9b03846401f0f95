"""What every runtime (local processes, Kubernetes, a remote control plane) must provide."""

from __future__ import annotations

import abc
import concurrent.futures
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from yr.errors import DeathInfo, YRError
from yr.options import InvokeOptions


@dataclass(frozen=True)
class ClassInfo:
    """What a caller needs to know about an instance's class without importing it."""

    class_name: str  # module.QualName
    method_meta: dict[str, int] = field(default_factory=dict)  # method -> return_nums
    # method -> its signature without defaults or annotations (picklable), to check arguments
    # at invoke(); absent for handles looked up by name
    signatures: dict[str, inspect.Signature] = field(default_factory=dict, compare=False)
    # methods that are generators: calling one returns an ObjectRefGenerator
    generators: frozenset[str] = field(default_factory=frozenset, compare=False)
    has_shutdown_hook: bool = field(default=False, compare=False)  # defines __yr_shutdown__

    @property
    def short_name(self) -> str:
        return self.class_name.rsplit(".", 1)[-1]


def qualified_name(name: str, namespace: str) -> str:
    """How ``yr.list_named_instances`` shows a name: ``namespace-name``, as openYuanrong does."""
    return f"{namespace}-{name}" if namespace else name


@dataclass(frozen=True)
class InstanceSpec:
    """Everything needed to start (and restart) one instance."""

    class_info: ClassInfo
    payload: bytes  # cloudpickle of (cls, args, kwargs)
    options: InvokeOptions
    # Shared-memory segments holding the payload's large buffers (pickle protocol 5, out of
    # band), in order: runtimes that share memory only. The runtime owns them from create on
    # and removes them when the instance can never start again.
    payload_buffers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Endpoint:
    """Where one incarnation of an instance serves calls."""

    address: str  # host:port
    incarnation: int
    # "" for the runtime's own session; else the session whose credentials reach it (an
    # instance left detached by another driver, or its subtree)
    session: str = ""
    local_socket: str = ""  # a Unix socket serving the same calls to callers on its machine


# How a resource group's bundles are laid out over nodes (openYuanrong's and Ray's names).
RESOURCE_GROUP_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


@dataclass(frozen=True)
class Bundle:
    """One reservation of a resource group: what the instances placed in it may use."""

    cpu: int  # millicores
    memory: int  # MB
    custom: Mapping[str, float] = field(default_factory=dict)  # extended resources


@dataclass(frozen=True)
class ResourceGroupSpec:
    """A team's resources, reserved all or nothing before any member is placed in them."""

    name: str
    bundles: tuple[Bundle, ...]
    strategy: str = "PACK"


class Runtime(abc.ABC):
    """The contract a backend fulfils; the call path (client.py) only uses these."""

    session_token: str
    shares_memory: bool = False  # callers and instances on one machine (shared-memory buffers)
    # keeps instances created InvokeOptions(lifetime="detached") past their creator's end
    supports_detached: bool = False

    def open_channel(
        self, address: str, options: Sequence[tuple[str, Any]], *, session: str = ""
    ) -> grpc.Channel:
        """A channel to an instance (or gateway) at ``address``; plaintext unless the runtime
        secures its connections (Kubernetes: TLS pinned to the certificate of ``session``,
        the runtime's own by default)."""
        return grpc.insecure_channel(address, options=list(options))

    def session_token_of(self, session: str) -> str:
        """The token that calls reach an instance of ``session`` with (``Endpoint.session``)."""
        if session:
            raise YRError(f"{type(self).__name__} reaches no instance of another session")
        return self.session_token

    @abc.abstractmethod
    def create(self, spec: InstanceSpec, *, owner_id: str | None) -> str:
        """Register an instance and start it asynchronously; return its id at once.

        Raises before anything is created when the request can never be satisfied.
        """

    @abc.abstractmethod
    def endpoint(self, instance_id: str, *, min_incarnation: int = 0) -> concurrent.futures.Future:
        """A future of the ``Endpoint`` of the first incarnation >= ``min_incarnation`` that is
        ready; it fails with the scheduling, creation or death error if none will be."""

    @abc.abstractmethod
    def await_death(
        self, instance_id: str, incarnation: int, *, timeout: float
    ) -> DeathInfo | None:
        """How that incarnation died, or None if it is still alive after ``timeout``."""

    @abc.abstractmethod
    def terminate(self, instance_id: str, *, wait: bool = False, reason: str = "") -> None:
        """Stop an instance and, recursively, everything it created; ``reason`` completes
        "instance X was ..." in what its callers are told (default: "terminated")."""

    def end_self(self, instance_id: str, *, reason: str) -> None:
        """End the calling instance from inside it (``yr.exit()``), so that its callers are
        told ``reason``; may not return."""
        self.terminate(instance_id, reason=reason)

    @abc.abstractmethod
    def get_named(self, name: str, namespace: str) -> tuple[str, ClassInfo]:
        """The id and class of a named instance; ``ValueError`` if there is none."""

    @abc.abstractmethod
    def resources(self) -> list[dict[str, Any]]:
        """Capacity and use, one dict per node."""

    def list_named(self) -> list[str]:
        """The named instances alive in this session's scope (``qualified_name`` each)."""
        raise YRError(f"{type(self).__name__} keeps no named instances")

    def block_wait(self, waiter: str, targets: list[str]) -> None:
        """``waiter`` (concurrency 1) blocks on calls to ``targets``; raise if that closes a
        cycle of such waits. Runtimes that keep no wait graph accept every wait."""
        return None

    def end_wait(self, waiter: str, targets: list[str]) -> None:
        """The wait recorded by ``block_wait`` is over."""
        return None

    def create_resource_group(self, spec: ResourceGroupSpec, *, owner_id: str | None) -> None:
        """Register a resource group and admit it asynchronously, all bundles or none.

        Raises before anything is created when the group can never be admitted (a bundle or
        the whole group larger than the capacity) or its name is taken in this scope.
        Instances whose ``resource_group_options`` name the group wait (within their
        ``schedule_timeout_ms``) until it is admitted, then use its bundles, never the free pool.
        """
        raise YRError(f"{type(self).__name__} has no resource groups")

    def resource_group_admitted(self, name: str) -> concurrent.futures.Future:
        """A future resolved (with None) once every bundle of the group is reserved; it fails
        with the reason if the group is removed or can no longer be admitted."""
        raise YRError(f"{type(self).__name__} has no resource groups")

    def remove_resource_group(self, name: str) -> None:
        """Release the group's reservations and terminate the instances placed in it (and,
        recursively, what they created); ``ValueError`` if there is no such group."""
        raise YRError(f"{type(self).__name__} has no resource groups")

    def describe_resource_group(self, name: str) -> str:
        """Where the group stands, for a person: admitted, or why it is still waiting (the
        capacity arithmetic, the operator's status); an unknown group is named as such."""
        raise YRError(f"{type(self).__name__} has no resource groups")

    @abc.abstractmethod
    def shutdown(self) -> None:
        """Terminate every instance this runtime created and release its resources."""
