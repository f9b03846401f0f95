"""The gateway against the local cluster: who it lets through, what it costs, and restarts.

A counting HTTP proxy stands between the gateway and the API server, so that tests can see
how many reads a flood of calls causes.
"""

from __future__ import annotations

import base64
import http.client
import http.server
import os
import pathlib
import signal
import ssl
import subprocess
import sys
import textwrap
import threading
import time
import urllib.parse

import grpc
import psutil
import pytest
import yaml
from kubernetes import client as k8s

import yr
from tests.cluster.operated import kubernetes_session
from tests.k8s_tls import install_gateway_key_pair
from tests.observe_instances import Leaf
from tests.support import wait_for
from tests.yr_cli_support import run_yr
from yr.contract import GATEWAY_SERVER_NAME
from yr.gateway import UNKNOWN_TTL_S
from yr.protocol import (
    CHANNEL_OPTIONS,
    PROTOCOL_METADATA_KEY,
    PROTOCOL_VERSION,
    ROUTE_METADATA_KEY,
    TOKEN_METADATA_KEY,
    yr_pb2,
    yr_pb2_grpc,
)
from yr.tls import PinnedServer

REPO = pathlib.Path(__file__).parents[1]
GROUP, VERSION, PLURAL = "yr.dev", "v1alpha1", "yrinstances"
REQUEST_BYTES = 100 << 20
GATEWAY_MEMORY_LIMIT = 256 << 20  # the chart's gateway.resources.limits.memory (256Mi)
_GATEWAY_CERTIFICATES: dict[str, bytes] = {}  # gateway address -> its certificate, to pin


@yr.instance(invoke_options=yr.InvokeOptions(cpu=500, memory=128))
class Sink:
    def size(self, data: bytes) -> int:
        return len(data)

    def pid(self) -> int:
        return os.getpid()


class _CountingProxy(http.server.ThreadingHTTPServer):
    """Forwards HTTP requests to the API server and counts them."""

    daemon_threads = True

    def __init__(self, upstream: str, upstream_tls: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream = urllib.parse.urlsplit(upstream)
        self.upstream_tls = upstream_tls
        self.requests: list[str] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    server: _CountingProxy

    def _forward(self) -> None:
        with self.server.lock:
            self.server.requests.append(f"{self.command} {self.path}")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        upstream = http.client.HTTPSConnection(
            self.server.upstream.netloc, timeout=60, context=self.server.upstream_tls
        )
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        upstream.request(self.command, self.path, body=body or None, headers=headers)
        reply = upstream.getresponse()
        payload = reply.read()
        self.send_response(reply.status)
        for key, value in reply.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        upstream.close()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def gateway(cluster, instance_namespace, tmp_path):
    """A gateway process reading the API server through a counting proxy."""
    config = yaml.safe_load(cluster.kubeconfig_for(instance_namespace, "yr-gateway").read_text())
    (entry,) = config["clusters"]
    authority = base64.b64decode(entry["cluster"].pop("certificate-authority-data")).decode()
    proxy = _CountingProxy(cluster.base_url, ssl.create_default_context(cadata=authority))
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    entry["cluster"]["server"] = proxy.url  # plain HTTP to the proxy, HTTPS beyond it
    kubeconfig = tmp_path / "gateway-kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    env = dict(
        cluster.env,
        KUBECONFIG=str(kubeconfig),
        YR_NAMESPACE=instance_namespace,
        YR_GATEWAY_PORT="0",
        YR_GATEWAY_HOST="127.0.0.1",
        **install_gateway_key_pair(cluster.api_client(), instance_namespace, tmp_path / "tls"),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "yr.gateway"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        address = process.stdout.readline().split()[-1]
        _GATEWAY_CERTIFICATES[address] = (tmp_path / "tls" / "gateway.crt").read_bytes()
        yield process, address, proxy
    finally:
        process.terminate()
        process.wait(15)
        proxy.shutdown()
        proxy.server_close()


@pytest.fixture
def session(cluster, instance_namespace, gateway):
    _, address, _ = gateway
    with kubernetes_session(cluster, instance_namespace, gateway=address):
        yield yr.session.current().runtime


def _status_bytes(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def _reset_peak(pid: int) -> None:
    with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # the peak (VmHWM) restarts from the current RSS


def _call(address: str, metadata: tuple, request: bytes = b"", *, timeout: float = 120):
    with _channel(address) as channel:
        return channel.unary_unary("/yr.v1.Instance/Call")(
            request, metadata=metadata, timeout=timeout
        )


def _channel(address: str) -> grpc.Channel:
    """Pinned to the gateway's certificate, as a driver's channel is."""
    return PinnedServer(_GATEWAY_CERTIFICATES[address], GATEWAY_SERVER_NAME).secure_channel(
        address, CHANNEL_OPTIONS
    )


def _refusal(address: str, metadata: tuple, request: bytes = b"") -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        _call(address, metadata, request)
    return caught.value


def _ready_sink(session) -> Sink:
    sink = Sink.invoke()
    assert yr.get(sink.size.invoke(b"abc"), timeout=60) == 3
    return sink


def test_a_call_without_a_token_is_refused_before_the_gateway_buffers_it(session, gateway):
    process, address, _ = gateway
    sink = _ready_sink(session)
    _reset_peak(process.pid)
    before = _status_bytes(process.pid, "VmRSS")
    # A well-formed CallRequest would not matter: the gateway must not read it at all.
    for _ in range(2):
        error = _refusal(address, ((ROUTE_METADATA_KEY, sink.instance_id),), bytes(REQUEST_BYTES))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    growth = _status_bytes(process.pid, "VmHWM") - before
    assert growth < 32 << 20, f"the gateway grew by {growth >> 20} MiB"


def test_a_100_mib_argument_passes_through_the_gateway_within_its_256_mib_limit(session, gateway):
    process, _, _ = gateway
    sink = _ready_sink(session)
    _reset_peak(process.pid)

    assert yr.get(sink.size.invoke(bytes(REQUEST_BYTES)), timeout=300) == REQUEST_BYTES

    peak = _status_bytes(process.pid, "VmHWM")
    assert peak < GATEWAY_MEMORY_LIMIT, f"the gateway peaked at {peak >> 20} MiB"


def test_calls_without_a_token_cause_no_api_server_reads(gateway):
    _, address, proxy = gateway
    proxy.requests.clear()
    for attempt in range(40):
        error = _refusal(address, ((ROUTE_METADATA_KEY, f"nobody-{attempt}"),))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert proxy.requests == []


def test_repeated_calls_to_an_unknown_instance_are_looked_up_once_per_cache_period(gateway):
    _, address, proxy = gateway
    proxy.requests.clear()
    metadata = ((ROUTE_METADATA_KEY, "nobody"), (TOKEN_METADATA_KEY, "some-token"))
    started = time.monotonic()
    for _ in range(40):
        error = _refusal(address, metadata)
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert "no ready instance 'nobody'" in error.details()
    periods = (time.monotonic() - started) / UNKNOWN_TTL_S
    assert 1 <= len(proxy.requests) <= periods + 1


def test_a_call_with_another_token_is_refused_by_the_gateway(session, gateway):
    _, address, _ = gateway
    sink = _ready_sink(session)
    metadata = ((ROUTE_METADATA_KEY, sink.instance_id), (TOKEN_METADATA_KEY, "not-the-token"))
    error = _refusal(address, metadata)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "the gateway refused the call: wrong session token" in error.details()


def test_one_gateway_serves_the_sessions_of_two_drivers(
    cluster, instance_namespace, session, gateway
):
    _, address, _ = gateway
    first = _ready_sink(session)
    other_driver = textwrap.dedent(
        f"""
        import yr
        from tests.test_gateway import Sink
        yr.init(yr.Config(backend="kubernetes", gateway={address!r}))  # YR_NAMESPACE
        try:
            print("size", yr.get(Sink.invoke().size.invoke(b"12345"), timeout=60))
        finally:
            yr.finalize()
        """
    )
    finished = subprocess.run(
        [sys.executable, "-c", other_driver],
        env=dict(cluster.env, YR_NAMESPACE=instance_namespace),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert finished.returncode == 0, finished.stderr
    assert "size 5" in finished.stdout
    assert yr.get(first.size.invoke(b"12"), timeout=60) == 2


def _connected_ips(pid: int) -> set[str]:
    """Where ``pid`` holds TCP connections (a closed connection's socket is gone)."""
    return {c.raddr.ip for c in psutil.Process(pid).net_connections(kind="tcp") if c.raddr}


def _yrinstance(cluster, namespace: str, name: str) -> dict:
    custom = k8s.CustomObjectsApi(cluster.api_client())
    return custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def test_the_next_call_after_a_pod_is_killed_goes_through_the_gateway(
    cluster, instance_namespace, session, gateway
):
    process, _, _ = gateway
    sink = Sink.options(yr.InvokeOptions(cpu=500, memory=128, recover_retry_times=2)).invoke()
    pid = yr.get(sink.pid.invoke(), timeout=60)
    pod_ip = _yrinstance(cluster, instance_namespace, sink.instance_id)["status"]["podIP"]
    os.kill(pid, signal.SIGKILL)
    # A call racing the kill may or may not have reached the pod, which is not this test's
    # subject. Its subject is the gateway still holding the dead pod's address once the
    # instance has restarted: wait until the gateway's connection to the dead pod is closed
    # and the next incarnation is Ready, then call.
    wait_for(
        lambda: pod_ip not in _connected_ips(process.pid),
        timeout=30,
        what="the gateway to see its connection to the killed pod close",
    )

    def status() -> dict:
        return _yrinstance(cluster, instance_namespace, sink.instance_id).get("status") or {}

    wait_for(
        lambda: (s := status()).get("restarts") == 1 and s.get("phase") == "Ready",
        timeout=60,
        what="the next incarnation to be Ready",
    )
    assert yr.get(sink.pid.invoke(), timeout=90) != pid


def test_the_gateway_has_a_help_message():
    shown = subprocess.run(
        [sys.executable, "-m", "yr.gateway", "--help"], capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    assert "usage: python -m yr.gateway" in shown.stdout
    assert "YR_NAMESPACE" in shown.stdout


def test_an_authenticated_hello_is_forwarded_to_the_instance(session, gateway):
    _, address, _ = gateway
    sink = _ready_sink(session)
    metadata = (
        (ROUTE_METADATA_KEY, sink.instance_id),
        (TOKEN_METADATA_KEY, session.session_token),
        (PROTOCOL_METADATA_KEY, str(PROTOCOL_VERSION)),
    )
    with _channel(address) as channel:
        reply = yr_pb2_grpc.InstanceStub(channel).Hello(
            yr_pb2.HelloRequest(), metadata=metadata, timeout=30
        )
    assert reply.instance_id == sink.instance_id


def test_the_gateway_forwards_debug_stacks_to_the_routed_pod(session, gateway):
    _, address, _ = gateway
    leaf = Leaf.invoke()
    leaf.doze.invoke()
    metadata = ((ROUTE_METADATA_KEY, leaf.instance_id), (TOKEN_METADATA_KEY, session.session_token))

    def dozing() -> str | None:
        with _channel(address) as channel:
            try:
                reply = yr_pb2_grpc.DebugStub(channel).Stacks(
                    yr_pb2.StacksRequest(), metadata=metadata, timeout=30
                )
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:  # its pod is not ready yet
                    raise
                return None
        stacks = "".join(thread.stack for thread in reply.threads)
        return stacks if "in doze" in stacks else None

    assert "time.sleep(600)" in wait_for(dozing, timeout=90, what="the leaf's stack via gateway")


def test_yr_stack_with_a_gateway_reaches_the_pod_through_it(
    cluster, instance_namespace, session, gateway
):
    _, address, _ = gateway
    leaf = Leaf.invoke()
    leaf.doze.invoke()

    def dozing() -> str | None:
        done = run_yr(
            "--kubernetes",
            "-n",
            instance_namespace,
            "stack",
            leaf.instance_id,
            KUBECONFIG=str(cluster.kubeconfig),
            YR_GATEWAY=address,
        )
        return done.stdout if "in doze" in done.stdout else None

    assert "time.sleep(600)" in wait_for(dozing, timeout=90, what="yr stack via the gateway")
