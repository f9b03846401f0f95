"""RemoteRuntime: how an instance process uses its driver's local runtime, over gRPC."""

from __future__ import annotations

import concurrent.futures
import os
from typing import Any

import grpc

from yr import credentials, serialization
from yr.errors import DeathInfo, YRError
from yr.protocol import (
    CHANNEL_OPTIONS,
    ERROR_METADATA_KEY,
    SESSION_METADATA_KEY,
    TOKEN_METADATA_KEY,
    groups_pb2,
    groups_pb2_grpc,
    yr_pb2,
    yr_pb2_grpc,
)
from yr.runtime.base import ClassInfo, Endpoint, InstanceSpec, ResourceGroupSpec, Runtime


def _unwrap(error: grpc.RpcError) -> BaseException:
    for key, value in error.trailing_metadata() or ():
        if key == ERROR_METADATA_KEY:
            try:
                return serialization.loads(value)
            except Exception:
                break
    return YRError(f"the driver's runtime refused the request: {error.details()}")


class RemoteRuntime(Runtime):
    """The Runtime contract, forwarded to the driver that started this instance."""

    # The driver's runtime decides (a driver hands detached instances to its keeper).
    supports_detached = True

    def __init__(self, address: str, token: str) -> None:
        self.shares_memory = True
        self.session_token = token
        self._other_tokens: dict[str, str] = {}  # session -> token, from Resolve
        self._channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        self._stub = yr_pb2_grpc.RuntimeStub(self._channel)
        self._groups = groups_pb2_grpc.ResourceGroupsStub(self._channel)
        self._metadata = ((TOKEN_METADATA_KEY, token),)

    @classmethod
    def from_environment(cls) -> RemoteRuntime:
        return cls(os.environ["YR_CONTROL_ADDRESS"], credentials.session_token())

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, metadata=self._metadata)
        except grpc.RpcError as error:
            raise _unwrap(error) from None

    def create(self, spec: InstanceSpec, *, owner_id: str | None) -> str:
        request = yr_pb2.CreateRequest(owner_id=owner_id or "", spec=serialization.dumps(spec))
        return self._call(self._stub.Create, request).instance_id

    def endpoint(self, instance_id: str, *, min_incarnation: int = 0) -> concurrent.futures.Future:
        result: concurrent.futures.Future = concurrent.futures.Future()
        call = self._stub.Resolve.future(
            yr_pb2.ResolveRequest(instance_id=instance_id, min_incarnation=min_incarnation),
            metadata=self._metadata,
        )

        def done(reply_future: grpc.Future) -> None:
            try:
                reply = reply_future.result()
            except grpc.RpcError as error:
                result.set_exception(_unwrap(error))
                return
            trailer = dict(reply_future.trailing_metadata() or ())
            session = trailer.get(SESSION_METADATA_KEY, "")
            if session:  # an instance of another session: remember how to call it
                self._other_tokens[session] = trailer[TOKEN_METADATA_KEY]
            result.set_result(
                Endpoint(
                    reply.address,
                    reply.incarnation,
                    session=session,
                    local_socket=reply.local_socket,
                )
            )

        call.add_done_callback(done)
        return result

    def session_token_of(self, session: str) -> str:
        if session in self._other_tokens:
            return self._other_tokens[session]
        return super().session_token_of(session)

    def await_death(
        self, instance_id: str, incarnation: int, *, timeout: float
    ) -> DeathInfo | None:
        reply = self._call(
            self._stub.AwaitDeath,
            yr_pb2.AwaitDeathRequest(
                instance_id=instance_id, incarnation=incarnation, timeout_s=timeout
            ),
        )
        return serialization.loads(reply.death) if reply.death else None

    def terminate(self, instance_id: str, *, wait: bool = False, reason: str = "") -> None:
        request = yr_pb2.TerminateRequest(instance_id=instance_id, wait=wait, reason=reason)
        self._call(self._stub.Terminate, request)

    def get_named(self, name: str, namespace: str) -> tuple[str, ClassInfo]:
        record = self._call(
            self._stub.GetNamed, yr_pb2.GetNamedRequest(name=name, namespace=namespace)
        )
        info = ClassInfo(record.class_name, serialization.loads(record.method_meta))
        return record.instance_id, info

    def list_named(self) -> list[str]:
        return list(self._call(self._stub.ListNamed, yr_pb2.ListNamedRequest()).names)

    def resources(self) -> list[dict[str, Any]]:
        reply = self._call(self._stub.Resources, yr_pb2.ResourcesRequest())
        return serialization.loads(reply.resources)

    def block_wait(self, waiter: str, targets: list[str]) -> None:
        self._call(self._stub.BlockWait, yr_pb2.WaitRequest(waiter=waiter, targets=targets))

    def end_wait(self, waiter: str, targets: list[str]) -> None:
        self._call(self._stub.EndWait, yr_pb2.WaitRequest(waiter=waiter, targets=targets))

    def create_resource_group(self, spec: ResourceGroupSpec, *, owner_id: str | None) -> None:
        bundles = [
            groups_pb2.BundleSpec(cpu=b.cpu, memory=b.memory, custom=dict(b.custom))
            for b in spec.bundles
        ]
        request = groups_pb2.CreateGroupRequest(
            owner_id=owner_id or "", name=spec.name, strategy=spec.strategy, bundles=bundles
        )
        self._call(self._groups.Create, request)

    def resource_group_admitted(self, name: str) -> concurrent.futures.Future:
        result: concurrent.futures.Future = concurrent.futures.Future()
        call = self._groups.AwaitAdmitted.future(
            groups_pb2.GroupRequest(name=name), metadata=self._metadata
        )

        def done(reply_future: grpc.Future) -> None:
            try:
                reply_future.result()
            except grpc.RpcError as error:
                result.set_exception(_unwrap(error))
                return
            result.set_result(None)

        call.add_done_callback(done)
        return result

    def remove_resource_group(self, name: str) -> None:
        self._call(self._groups.Remove, groups_pb2.GroupRequest(name=name))

    def describe_resource_group(self, name: str) -> str:
        reply = self._call(self._groups.Describe, groups_pb2.GroupRequest(name=name))
        return reply.description

    def shutdown(self) -> None:
        self._channel.close()
