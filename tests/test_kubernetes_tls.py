"""Session TLS: a driver only talks to a server holding its session's key, so a YRInstance
status pointing at someone else's address (anyone who may patch yrinstances/status could write
one) fails the handshake and never sees the session token.

No operator runs: the test writes the status itself, as an attacker would.
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from kubernetes import client as k8s

import yr
from tests.k8s_instances import Worker
from tests.k8s_tls import install_gateway_key_pair
from yr.call_failures import DEATH_REPORT_TIMEOUT_ENV
from yr.protocol import TOKEN_METADATA_KEY, yr_pb2, yr_pb2_grpc
from yr.tls import make_key_pair, server_credentials

CRD = Path(__file__).resolve().parents[1] / "crds" / "yrinstances.yaml"
GROUP, VERSION, PLURAL = "yr.dev", "v1alpha1", "yrinstances"


class _Recorder(grpc.ServerInterceptor):
    """Keeps the metadata of every call that reaches it: what a spoofed pod would learn."""

    def __init__(self) -> None:
        self.metadata: list[tuple] = []

    def intercept_service(self, continuation, handler_call_details):
        self.metadata.append(tuple(handler_call_details.invocation_metadata or ()))
        return continuation(handler_call_details)


class _Impostor(yr_pb2_grpc.InstanceServicer):
    def Call(self, request, context):
        return yr_pb2.CallReply()

    def Hello(self, request, context):
        return yr_pb2.HelloReply()


def _spoof_status(cluster, namespace: str, name: str, port: int) -> None:
    """What anyone allowed to patch yrinstances/status can write: a Ready pod at their address."""
    k8s.CustomObjectsApi(cluster.api_client()).patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        name,
        {"status": {"phase": "Ready", "podIP": "127.0.0.1", "port": port, "restarts": 0}},
    )


@pytest.fixture(scope="module")
def cluster(module_local_cluster):
    return module_local_cluster(crds=[CRD], node_name=None)  # no node, no operator


@pytest.fixture
def session(cluster, namespace, monkeypatch) -> Iterator[yr.session.Session]:
    # A refused handshake is not a death: no death report comes, so no need to wait 5 s for one.
    monkeypatch.setenv(DEATH_REPORT_TIMEOUT_ENV, "0.5")
    yr.init(
        yr.Config(backend="kubernetes", namespace=namespace, kubeconfig=str(cluster.kubeconfig))
    )
    try:
        yield yr.session.current()
    finally:
        yr.finalize()


@pytest.fixture(params=["plaintext", "another-certificate"])
def impostor(request) -> Iterator[tuple[int, _Recorder]]:
    """A yr.Instance server that does not hold the session's key: plaintext, or TLS with a key
    pair of its own (for the same name, as a forger would make it)."""
    recorder = _Recorder()
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=4), interceptors=[recorder]
    )
    yr_pb2_grpc.add_InstanceServicer_to_server(_Impostor(), server)
    if request.param == "plaintext":
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        certificate, key = make_key_pair("yr-session.anything")
        port = server.add_secure_port("127.0.0.1:0", server_credentials(certificate, key))
    server.start()
    try:
        yield port, recorder
    finally:
        server.stop(grace=None).wait(10)


def test_a_spoofed_pod_address_fails_the_handshake_and_never_sees_the_token(
    cluster, namespace, session, impostor
):
    port, recorder = impostor
    worker = Worker.invoke()
    _spoof_status(cluster, namespace, worker.instance_id, port)

    with pytest.raises(yr.YRError) as caught:
        yr.get(worker.pid.invoke(), timeout=60)

    assert not any(key == TOKEN_METADATA_KEY for call in recorder.metadata for key, _ in call)
    assert recorder.metadata == []  # no call at all reached it: the handshake came first
    assert "handshake failed" in str(caught.value).lower()


@pytest.fixture
def gateway(cluster, namespace, tmp_path) -> Iterator[str]:
    """A gateway process for the namespace, with its key pair as the chart makes it."""
    env = dict(
        os.environ,
        KUBECONFIG=str(cluster.kubeconfig),
        YR_NAMESPACE=namespace,
        YR_GATEWAY_PORT="0",
        YR_GATEWAY_HOST="127.0.0.1",
        **install_gateway_key_pair(cluster.api_client(), namespace, tmp_path / "tls"),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "yr.gateway"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        yield process.stdout.readline().split()[-1]
    finally:
        process.terminate()
        process.wait(15)
        process.stdout.close()


def test_the_gateway_never_forwards_a_call_to_a_spoofed_pod_address(
    cluster, namespace, gateway, impostor, monkeypatch
):
    port, recorder = impostor
    monkeypatch.setenv(DEATH_REPORT_TIMEOUT_ENV, "0.5")  # no death comes to be reported
    yr.init(
        yr.Config(
            backend="kubernetes",
            namespace=namespace,
            kubeconfig=str(cluster.kubeconfig),
            gateway=gateway,
        )
    )
    try:
        worker = Worker.invoke()
        _spoof_status(cluster, namespace, worker.instance_id, port)

        with pytest.raises(yr.YRError) as caught:
            yr.get(worker.pid.invoke(), timeout=60)
    finally:
        yr.finalize()

    assert recorder.metadata == []  # the gateway's handshake with it failed: no call, no token
    assert "handshake failed" in str(caught.value).lower()


def test_the_session_secret_holds_the_token_and_the_session_key_pair(cluster, namespace, session):
    name = f"yr-session-{session.runtime._session}"
    secret = k8s.CoreV1Api(cluster.api_client()).read_namespaced_secret(name, namespace)
    assert set(secret.data) == {"token", "tls.crt", "tls.key"}


def test_a_driver_whose_gateway_has_no_certificate_secret_says_so_and_creates_nothing(
    cluster, namespace
):
    with pytest.raises(yr.YRError, match="cannot read the gateway's certificate .*yr-gateway-tls"):
        yr.init(
            yr.Config(
                backend="kubernetes",
                namespace=namespace,
                kubeconfig=str(cluster.kubeconfig),
                gateway="127.0.0.1:1",
            )
        )
    assert k8s.CoordinationV1Api(cluster.api_client()).list_namespaced_lease(namespace).items == []
