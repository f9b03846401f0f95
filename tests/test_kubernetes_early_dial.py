"""An instance is usable as soon as its server answers, not when the kubelet's readiness probe
next runs: the SDK's status watcher checks the gRPC health of a Running pod itself.

Runs the real StatusWatcher against the emulated API server, with the YRInstance status written
by hand (no operator) and a real gRPC health server standing in for the pod's server.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from kubernetes import client as k8s

from yr.contract import session_server_name
from yr.runtime.kubernetes.watcher import StatusWatcher
from yr.tls import PinnedServer, make_key_pair, server_credentials

CRD = Path(__file__).resolve().parents[1] / "crds" / "yrinstances.yaml"
GROUP, VERSION, PLURAL, SESSION = "yr.dev", "v1alpha1", "yrinstances", "early"
SESSION_CERTIFICATE, SESSION_KEY = make_key_pair(session_server_name(SESSION))


@pytest.fixture(scope="module")
def cluster(module_local_cluster):
    """An API server without nodes or operator: statuses are written by hand."""
    return module_local_cluster(crds=[CRD], node_name=None)


@pytest.fixture
def custom(cluster, namespace: str) -> Iterator[k8s.CustomObjectsApi]:
    """The API of this test's own namespace (the `namespace` fixture)."""
    with cluster.api_client() as api:
        yield k8s.CustomObjectsApi(api)


class _Recorder(grpc.ServerInterceptor):
    """Remembers every call's method and metadata: what a spoofed pod would learn."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple]] = []

    def intercept_service(self, continuation, handler_call_details):
        self.calls.append(
            (handler_call_details.method, tuple(handler_call_details.invocation_metadata))
        )
        return continuation(handler_call_details)


def _health_server(credentials: grpc.ServerCredentials | None):
    recorder = _Recorder()
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=4), interceptors=[recorder]
    )
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, port, servicer, recorder


@pytest.fixture
def pod_server() -> Iterator[tuple[int, health.HealthServicer]]:
    """A gRPC server with the standard health service, NOT_SERVING until a test says so,
    serving TLS with the session's key pair as an instance pod does."""
    server, port, servicer, _ = _health_server(server_credentials(SESSION_CERTIFICATE, SESSION_KEY))
    try:
        yield port, servicer
    finally:
        server.stop(grace=None).wait(10)


@pytest.fixture(params=["plaintext", "another-certificate"])
def spoofed_server(request) -> Iterator[tuple[int, health.HealthServicer, _Recorder]]:
    """A server at a pod's address that does not hold the session's key: plaintext, or TLS
    with a certificate of its own for the same name."""
    credentials = None
    if request.param == "another-certificate":
        credentials = server_credentials(*make_key_pair(session_server_name(SESSION)))
    server, port, servicer, recorder = _health_server(credentials)
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    try:
        yield port, servicer, recorder
    finally:
        server.stop(grace=None).wait(10)


def create_instance(custom: k8s.CustomObjectsApi, namespace: str, name: str, status: dict) -> None:
    """As the SDK does it: after the watcher tracks the name, so it sees every status."""
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "YRInstance",
        "metadata": {"name": name, "labels": {"yr.dev/session": SESSION}},
        "spec": {
            "className": "m.C",
            "cpu": 1,
            "memory": 1,
            "payloadSecret": f"{name}-payload",
            "session": SESSION,
        },
    }
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, {"status": status}
    )


def direct(name: str, status: dict) -> str:
    return f"{status['podIP']}:{status['port']}"


def through_gateway(name: str, status: dict) -> str:
    return f"gateway.example:50052#{name}"


@pytest.fixture
def watcher_factory(custom, namespace: str) -> Iterator:
    watchers: list[StatusWatcher] = []

    def start(address_of=direct) -> StatusWatcher:
        pinned = PinnedServer(SESSION_CERTIFICATE, session_server_name(SESSION))
        watcher = StatusWatcher(
            custom_api=custom,
            namespace=namespace,
            session=SESSION,
            address_of=address_of,
            open_channel=pinned.secure_channel,
        )
        watchers.append(watcher)
        return watcher

    yield start
    for watcher in watchers:
        watcher.stop()


def running(port: int) -> dict:
    return {"phase": "Running", "podIP": "127.0.0.1", "port": port, "restarts": 0}


def test_a_running_pod_whose_server_serves_is_usable_before_it_is_ready(
    custom, namespace, pod_server, watcher_factory
):
    port, servicer = pod_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    watcher = watcher_factory()
    watcher.track("serving-before-ready", class_name="m.C", schedule_timeout_s=60)
    create_instance(custom, namespace, "serving-before-ready", running(port))

    endpoint = watcher.endpoint("serving-before-ready", 0).result(timeout=30)
    assert endpoint.address == f"127.0.0.1:{port}"
    assert endpoint.incarnation == 0


def test_a_running_pod_is_not_used_until_its_object_is_constructed(
    custom, namespace, pod_server, watcher_factory
):
    port, servicer = pod_server
    watcher = watcher_factory()
    watcher.track("still-constructing", class_name="m.C", schedule_timeout_s=60)
    create_instance(custom, namespace, "still-constructing", running(port))

    future = watcher.endpoint("still-constructing", 0)
    with pytest.raises(concurrent.futures.TimeoutError):
        future.result(timeout=1.0)  # NOT_SERVING: the server listens but is constructing
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert future.result(timeout=30).address == f"127.0.0.1:{port}"


def test_through_a_gateway_a_running_pod_waits_for_ready(
    custom, namespace, pod_server, watcher_factory
):
    port, servicer = pod_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    watcher = watcher_factory(address_of=through_gateway)
    watcher.track("behind-gateway", class_name="m.C", schedule_timeout_s=60)
    create_instance(custom, namespace, "behind-gateway", running(port))

    future = watcher.endpoint("behind-gateway", 0)
    with pytest.raises(concurrent.futures.TimeoutError):
        future.result(timeout=1.0)
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "behind-gateway", {"status": {"phase": "Ready"}}
    )
    assert future.result(timeout=30).address == "gateway.example:50052#behind-gateway"


def test_a_running_pod_at_a_spoofed_address_is_never_handed_out(
    custom, namespace, spoofed_server, watcher_factory
):
    port, _, recorder = spoofed_server
    watcher = watcher_factory()
    name = f"spoofed-{port}"
    watcher.track(name, class_name="m.C", schedule_timeout_s=60)
    create_instance(custom, namespace, name, running(port))

    future = watcher.endpoint(name, 0)
    with pytest.raises(concurrent.futures.TimeoutError):
        future.result(timeout=3.0)  # a pinned dial retries the handshake, never succeeds
    assert recorder.calls == []  # the TLS handshake failed before any call was made
