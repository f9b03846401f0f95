"""A pod's own network for Python processes on the emulated node: wildcard binds are the pod's IP.

A real pod has its own network namespace, so a server binding 0.0.0.0:8080 there holds only
the pod's address. On the emulated node all pods share the machine's network: the node agent
puts this directory first on a pod's PYTHONPATH with EMULATED_POD_IP set, and a wildcard bind
(socket or gRPC server) becomes a bind to the pod's 127.x.y.z address, so pods and other
programs on this machine can use the same ports.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import socket
import sys
from typing import Any

POD_IP = os.environ.get("EMULATED_POD_IP", "")
WILDCARDS = ("", "0.0.0.0", "::", "[::]")
# grpc binds in C: its servers' add_insecure_port is where the address can still be rewritten.
GRPC_SERVERS = {"grpc._server": "_Server", "grpc.aio._server": "Server"}


def pod_address(address: str) -> str:
    """`0.0.0.0:50052` or `[::]:50052` -> `<pod ip>:50052`; other addresses unchanged."""
    host, _, port = address.rpartition(":")
    return f"{POD_IP}:{port}" if host in WILDCARDS else address


def _bind(original: Any) -> Any:
    def bind(self: socket.socket, address: Any) -> None:
        if self.family == socket.AF_INET and isinstance(address, tuple) and address[0] in WILDCARDS:
            address = (POD_IP, *address[1:])
        return original(self, address)

    return bind


class _GrpcServerPatcher(importlib.abc.MetaPathFinder):
    """Patches a gRPC server class right after its module is first imported."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in GRPC_SERVERS:
            return None
        sys.meta_path.remove(self)  # let the other finders find the real module
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        loader, class_name = spec.loader, GRPC_SERVERS[name]
        exec_module = loader.exec_module

        def exec_and_patch(module: Any) -> None:
            exec_module(module)
            server = getattr(module, class_name)
            add_port = server.add_insecure_port
            server.add_insecure_port = lambda self, address: add_port(self, pod_address(address))

        loader.exec_module = exec_and_patch  # type: ignore[method-assign]
        return spec


if POD_IP:
    socket.socket.bind = _bind(socket.socket.bind)  # type: ignore[method-assign]
    sys.meta_path.insert(0, _GrpcServerPatcher())
