"""What every runtime (local processes, Kubernetes, a remote control plane) must provide."""

from __future__ import annotations

import abc
import concurrent.futures
import inspect
from collections.abc import Sequence
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


@dataclass(frozen=True)
class Endpoint:
    """Where one incarnation of an instance serves calls."""

    address: str  # host:port
    incarnation: int
    local_socket: str = ""  # a Unix socket serving the same calls to callers on its machine


class Runtime(abc.ABC):
    """The contract a backend fulfils; the call path (client.py) only uses these."""

    session_token: str
    shares_memory: bool = False  # callers and instances on one machine (shared-memory buffers)

    def open_channel(self, address: str, options: Sequence[tuple[str, Any]]) -> grpc.Channel:
        """A channel to an instance (or gateway) at ``address``; plaintext unless the runtime
        secures its connections (Kubernetes: TLS pinned to the session's certificate)."""
        return grpc.insecure_channel(address, options=list(options))

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

    @abc.abstractmethod
    def shutdown(self) -> None:
        """Terminate every instance this runtime created and release its resources."""
