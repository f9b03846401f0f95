"""The wire protocol: authentication before unpickling, version checks, generated code."""

from __future__ import annotations

import os
import pathlib

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import yr
from tests.instances import Counter
from yr import serialization
from yr.protocol import (
    PROTOCOL_METADATA_KEY,
    PROTOCOL_VERSION,
    TOKEN_METADATA_KEY,
    yr_pb2,
    yr_pb2_grpc,
)


class _WritesAFileWhenUnpickled:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def served(local_runtime):
    counter = Counter.invoke()
    yr.get(counter.add.invoke())
    endpoint = local_runtime.endpoint(counter.instance_id).result(10)
    with grpc.insecure_channel(endpoint.address) as channel:
        yield channel, local_runtime.session_token


def _call(channel, metadata, arguments: bytes):
    invocation = yr_pb2.Invocation(method="echo", arguments=arguments)
    request = yr_pb2.CallRequest(caller="test", seq=0, invocations=[invocation])
    return yr_pb2_grpc.InstanceStub(channel).Call(request, metadata=metadata, timeout=10)


def test_a_call_without_the_session_token_is_refused_and_never_unpickled(served, tmp_path):
    channel, _ = served
    marker = tmp_path / "unpickled"
    payload = serialization.dumps(((_WritesAFileWhenUnpickled(str(marker)),), {}))
    with pytest.raises(grpc.RpcError) as caught:
        _call(channel, ((PROTOCOL_METADATA_KEY, str(PROTOCOL_VERSION)),), payload)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert not marker.exists()


def test_a_call_with_a_wrong_token_is_refused(served):
    channel, _ = served
    metadata = ((TOKEN_METADATA_KEY, "guess"), (PROTOCOL_METADATA_KEY, str(PROTOCOL_VERSION)))
    with pytest.raises(grpc.RpcError) as caught:
        _call(channel, metadata, serialization.dumps(((1,), {})))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_protocol_version_mismatch_is_a_clear_error(served):
    channel, token = served
    metadata = ((TOKEN_METADATA_KEY, token), (PROTOCOL_METADATA_KEY, "99"))
    with pytest.raises(grpc.RpcError) as caught:
        _call(channel, metadata, serialization.dumps(((1,), {})))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "caller speaks version 99" in caught.value.details()


def test_an_authenticated_call_is_served(served):
    channel, token = served
    metadata = ((TOKEN_METADATA_KEY, token), (PROTOCOL_METADATA_KEY, str(PROTOCOL_VERSION)))
    reply = _call(channel, metadata, serialization.dumps(((7,), {})))
    assert serialization.loads(reply.outcomes[0].value) == 7


def test_health_reports_serving_without_a_token(served):
    channel, _ = served
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_the_control_plane_refuses_callers_without_the_token(local_runtime):
    with (
        grpc.insecure_channel(local_runtime._control.address) as channel,
        pytest.raises(grpc.RpcError) as caught,
    ):
        yr_pb2_grpc.RuntimeStub(channel).Resources(yr_pb2.ResourcesRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_generated_code_matches_the_proto(tmp_path):
    from yr.protocol.generate import generate

    generate(tmp_path)
    here = pathlib.Path(yr.protocol.__file__).parent
    for name in ("yr_pb2.py", "yr_pb2_grpc.py", "groups_pb2.py", "groups_pb2_grpc.py"):
        fresh = (tmp_path / "yr" / "protocol" / name).read_text()
        assert fresh == (here / name).read_text(), f"{name} is stale: run {here}/generate.py"
    assert os.path.exists(here / "yr.proto")
