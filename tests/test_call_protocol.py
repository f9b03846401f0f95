"""The Call RPC on a real instance server: sequence gaps never stall, calls name their instance."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import textwrap

import grpc
import pytest

import yr
from tests.call_instances import Mirror
from tests.support import all_dead, wait_for
from yr import serialization
from yr.client import CallClient
from yr.errors import DeathInfo
from yr.protocol import (
    CHANNEL_OPTIONS,
    PROTOCOL_METADATA_KEY,
    PROTOCOL_VERSION,
    TOKEN_METADATA_KEY,
    WRONG_INSTANCE_CODE,
    yr_pb2,
    yr_pb2_grpc,
)
from yr.runtime.base import Endpoint, Runtime

REPLY_DEADLINE_S = 15  # well under the server's 30 s give-up on a missing seq
TOKEN = "test-token"

SERVER = textwrap.dedent(
    """
    import asyncio, sys
    from yr import server

    def ready(port):
        print(port, flush=True)

    asyncio.run(server.serve(
        payload=open(sys.argv[1], "rb").read(), instance_id="mirror-1", class_name="Mirror",
        token=sys.argv[2], host="127.0.0.1", port=0, concurrency=1, on_ready=ready,
        incarnation=int(sys.argv[3]),
    ))
    """
)


@pytest.fixture
def instance_server(tmp_path):
    """A real instance server process (incarnation 2 of mirror-1); a stub to call it."""
    payload = tmp_path / "payload"
    payload.write_bytes(serialization.dumps((Mirror.cls, (), {})))
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(payload), TOKEN, "2"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    try:
        port = int(process.stdout.readline())
        channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS)
        stub = yr_pb2_grpc.InstanceStub(channel)
        stub.address = f"127.0.0.1:{port}"
        yield stub
        channel.close()
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        wait_for(lambda: all_dead([process.pid]), timeout=15, what="the server to exit")


def _ping(seq: int, **fields) -> yr_pb2.CallRequest:
    fields.setdefault("instance_id", "mirror-1")
    fields.setdefault("incarnation", 2)
    arguments = serialization.dumps(((), {}))
    return yr_pb2.CallRequest(
        caller="caller-1",
        seq=seq,
        invocations=[yr_pb2.Invocation(method="ping", arguments=arguments)],
        **fields,
    )


def _call(stub, request, **kwargs):
    metadata = ((TOKEN_METADATA_KEY, TOKEN), (PROTOCOL_METADATA_KEY, str(PROTOCOL_VERSION)))
    return stub.Call(request, metadata=metadata, timeout=REPLY_DEADLINE_S, **kwargs)


def _value(reply: yr_pb2.CallReply):
    return serialization.loads(reply.outcomes[0].value)


def test_a_batch_whose_earlier_seqs_are_settled_is_served_at_once(instance_server):
    assert _value(_call(instance_server, _ping(0))) == "pong"
    # seq 1 failed to send; the caller says so with the next batch
    assert _value(_call(instance_server, _ping(2, settled_below=2))) == "pong"


def test_a_gap_filler_releases_a_batch_already_waiting_for_the_missing_seq(instance_server):
    assert _value(_call(instance_server, _ping(0))) == "pong"
    metadata = ((TOKEN_METADATA_KEY, TOKEN), (PROTOCOL_METADATA_KEY, str(PROTOCOL_VERSION)))
    waiting = instance_server.Call.future(
        _ping(2, settled_below=1), metadata=metadata, timeout=REPLY_DEADLINE_S
    )
    filler = yr_pb2.CallRequest(
        caller="caller-1", seq=1, settled_below=1, instance_id="mirror-1", incarnation=2
    )
    assert not _call(instance_server, filler).outcomes
    assert _value(waiting.result()) == "pong"


def test_a_call_meant_for_another_instance_is_refused(instance_server):
    with pytest.raises(grpc.RpcError) as caught:
        _call(instance_server, _ping(0, instance_id="mirror-9"))
    assert caught.value.code() == WRONG_INSTANCE_CODE
    assert "mirror-9" in caught.value.details() and "refused" in caught.value.details()


def test_a_call_meant_for_another_incarnation_is_refused(instance_server):
    with pytest.raises(grpc.RpcError) as caught:
        _call(instance_server, _ping(0, incarnation=1))
    assert caught.value.code() == WRONG_INSTANCE_CODE
    assert _value(_call(instance_server, _ping(0))) == "pong"  # the right one is served


class _StaleFirstRuntime(Runtime):
    """The Runtime contract for one instance server whose address first resolves to a dead
    incarnation (a reused address), then to the live one."""

    shares_memory = False

    def __init__(self, address: str) -> None:
        self.session_token = TOKEN
        self.address = address
        self.resolved: list[int] = []

    def endpoint(self, instance_id, *, min_incarnation=0):
        incarnation = max(1, min_incarnation)
        self.resolved.append(incarnation)
        future = concurrent.futures.Future()
        future.set_result(Endpoint(self.address, incarnation))
        return future

    def await_death(self, instance_id, incarnation, *, timeout):
        return DeathInfo(reason="replaced", will_restart=True) if incarnation < 2 else None

    def create(self, spec, *, owner_id):
        raise NotImplementedError

    def terminate(self, instance_id, *, wait=False):
        raise NotImplementedError

    def get_named(self, name, namespace):
        raise NotImplementedError

    def resources(self):
        return []

    def shutdown(self):
        pass


def test_a_call_refused_by_another_incarnation_is_resent_to_the_current_one(instance_server):
    runtime = _StaleFirstRuntime(instance_server.address)
    client = CallClient(runtime, caller_id="caller-2")
    try:
        [ref] = client.submit("mirror-1", Mirror._class_info, "ping", (), {})
        assert yr.get(ref, timeout=REPLY_DEADLINE_S) == "pong"
        assert runtime.resolved == [1, 2]  # refused by the wrong one, re-resolved, re-sent
    finally:
        client.close()
