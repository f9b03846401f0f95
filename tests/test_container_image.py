"""The image built from the Dockerfile, run by a real container engine the way a pod runs it:
read-only root, uid 10001, every capability dropped, no privilege escalation.

`.ci/container-engine up` builds the image and `.ci/run` names it in YR_TEST_IMAGE. Without that
variable (a developer's plain `python -m pytest`) every test here is skipped with the reason; with
it, a missing engine or image is a failure, not a skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support import wait_for
from yr import contract as c
from yr import serialization
from yr.protocol import (
    CHANNEL_OPTIONS,
    PROTOCOL_METADATA_KEY,
    PROTOCOL_VERSION,
    ROUTE_METADATA_KEY,
    TOKEN_METADATA_KEY,
    yr_pb2,
    yr_pb2_grpc,
)
from yr.tls import PinnedServer, make_key_pair

REPO = Path(__file__).resolve().parent.parent
IMAGE = os.environ.get("YR_TEST_IMAGE", "")
# What the chart and the operator's pods set (securityContext), as `docker run` flags.
AS_A_POD = [
    "--read-only",
    "--tmpfs",
    "/tmp",
    "--user",
    "10001:10001",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
]
TOKEN = "container-test-token"

pytestmark = pytest.mark.skipif(
    not IMAGE,
    reason="no container image to test: set YR_TEST_IMAGE to an image built from the "
    "Dockerfile (`.ci/container-engine up` builds one; `.ci/run` does both)",
)


def docker_binary() -> str:
    # Debian's CLI matches Debian's daemon; a newer standalone one may sit earlier on PATH.
    found = os.environ.get("YR_DOCKER") or (
        "/usr/bin/docker" if Path("/usr/bin/docker").exists() else shutil.which("docker")
    )
    if not found:
        pytest.fail(f"YR_TEST_IMAGE={IMAGE} is set but there is no docker CLI")
    return found


@pytest.fixture(scope="module")
def docker() -> str:
    binary = docker_binary()
    found = subprocess.run(
        [binary, "image", "inspect", IMAGE], capture_output=True, text=True, timeout=60
    )
    if found.returncode != 0:
        pytest.fail(f"YR_TEST_IMAGE={IMAGE} is not an image of this engine: {found.stderr}")
    return binary


def run_once(docker: str, *argv: str, flags: list[str] = AS_A_POD) -> subprocess.CompletedProcess:
    return subprocess.run(
        [docker, "run", "--rm", "--network", "none", *flags, IMAGE, *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )


@contextlib.contextmanager
def container(docker: str, *flags: str, argv: tuple[str, ...] = ()) -> Iterator[str]:
    """A detached container, removed by its id at the end whatever happened."""
    started = subprocess.run(
        [docker, "run", "-d", *AS_A_POD, *flags, IMAGE, *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 0, started.stderr
    container_id = started.stdout.strip()
    try:
        yield container_id
    finally:
        subprocess.run([docker, "rm", "-f", container_id], capture_output=True, timeout=60)


def logs(docker: str, container_id: str) -> str:
    done = subprocess.run(
        [docker, "logs", container_id], capture_output=True, text=True, timeout=60
    )
    return done.stdout + done.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the image itself -----------------------------------------------------------------------


def test_image_runs_as_uid_10001_by_default(docker):
    done = run_once(docker, "id", "-u", flags=[])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "10001"


def test_image_has_no_pip_or_setuptools(docker):
    script = (
        "import importlib.util, shutil\n"
        "found = [m for m in ('pip', 'setuptools', 'wheel') if importlib.util.find_spec(m)]\n"
        "found += [b for b in ('pip', 'pip3') if shutil.which(b)]\n"
        "print(' '.join(found))\n"
    )
    done = run_once(docker, "python", "-c", script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_every_module_the_entry_points_import_is_precompiled(docker):
    # On a read-only root a module without bytecode is compiled again at every start.
    script = (
        "import importlib.util, os, sys\n"
        "import yr.server, yr.gateway, yr_operator.handlers\n"
        "missing = sorted(m.__file__ for m in list(sys.modules.values())\n"
        "    if (getattr(m, '__file__', None) or '').endswith('.py')\n"
        "    and not os.path.exists(importlib.util.cache_from_source(m.__file__)))\n"
        "print('\\n'.join(missing))\n"
    )
    done = run_once(docker, "python", "-c", script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"modules without bytecode:\n{done.stdout}"


# --- the instance server --------------------------------------------------------------------


@pytest.fixture
def instance_server(docker, tmp_path) -> Iterator[str]:
    """`python -m yr.server` (the image's CMD) serving a str, reachable on host loopback."""
    payload_dir = tmp_path / "payload"
    payload_dir.mkdir()
    (payload_dir / "payload").write_bytes(serialization.dumps((str, ("hello",), {})))
    # The pod's user is not root: the mounted volume must be readable by uid 10001.
    payload_dir.chmod(0o755)
    (payload_dir / "payload").chmod(0o644)
    flags = (
        "-v",
        f"{payload_dir}:/var/run/yr/payload:ro",
        "-e",
        f"YR_SESSION_TOKEN={TOKEN}",
        "-e",
        "YR_PAYLOAD_FILE=/var/run/yr/payload/payload",
        "-e",
        "YR_INSTANCE_NAME=str-test",
        "-p",
        "127.0.0.1::50051",
    )
    with container(docker, *flags) as container_id:
        port = subprocess.run(
            [docker, "port", container_id, "50051/tcp"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.split(":")[-1]
        address = f"127.0.0.1:{port.strip()}"
        with grpc.insecure_channel(address) as channel:

            def serving() -> bool:
                try:
                    reply = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=1
                    )
                except grpc.RpcError:
                    return False
                return reply.status == health_pb2.HealthCheckResponse.SERVING

            try:
                wait_for(serving, timeout=60, what="the instance server in the container")
            except AssertionError:
                raise AssertionError(logs(docker, container_id)) from None
        yield address


def call_upper(address: str, metadata: tuple[tuple[str, str], ...]):
    invocation = yr_pb2.Invocation(method="upper", arguments=serialization.dumps(((), {})))
    request = yr_pb2.CallRequest(caller="test", seq=0, invocations=[invocation])
    with grpc.insecure_channel(address) as channel:
        return yr_pb2_grpc.InstanceStub(channel).Call(request, metadata=metadata, timeout=30)


def test_instance_server_in_a_pod_like_container_answers_a_call_with_the_token(instance_server):
    reply = call_upper(
        instance_server,
        ((TOKEN_METADATA_KEY, TOKEN), (PROTOCOL_METADATA_KEY, str(PROTOCOL_VERSION))),
    )
    assert serialization.loads(reply.outcomes[0].value) == "HELLO"


def test_instance_server_in_a_pod_like_container_refuses_a_call_without_the_token(
    instance_server,
):
    with pytest.raises(grpc.RpcError) as caught:
        call_upper(instance_server, ((PROTOCOL_METADATA_KEY, str(PROTOCOL_VERSION)),))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


# --- operator and gateway entry points, against an emulated API server -----------------------


@pytest.fixture
def api_server(local_cluster, tmp_path) -> Path:
    """An emulated API server with the CRD on host loopback; its kubeconfig, readable by 10001."""
    cluster = local_cluster(crds=[REPO / "crds" / "yrinstances.yaml"], node_name=None)
    kube_dir = tmp_path / "kube"
    kube_dir.mkdir(mode=0o755)
    shutil.copy(cluster.kubeconfig, kube_dir / "config")
    (kube_dir / "config").chmod(0o644)
    return kube_dir


def host_network(kube_dir: Path) -> tuple[str, ...]:
    # Host networking: the emulated API server listens on the host's loopback only.
    return ("--network", "host", "-v", f"{kube_dir}:/kube:ro", "-e", "KUBECONFIG=/kube/config")


def test_operator_entry_point_starts_and_answers_its_liveness_probe(docker, api_server):
    import urllib.request

    port = free_port()
    liveness = f"http://127.0.0.1:{port}/healthz"
    argv = ("yr-operator", "-n", "default", "--liveness", liveness)
    with container(docker, *host_network(api_server), argv=argv) as container_id:

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(liveness, timeout=1) as response:
                    return response.status == 200
            except OSError:
                return False

        try:
            wait_for(healthy, timeout=90, what="the operator's /healthz", interval=0.2)
        except AssertionError:
            raise AssertionError(logs(docker, container_id)) from None


def test_gateway_entry_point_serves_grpc(docker, api_server, tmp_path):
    # The gateway serves TLS only, with the key pair the chart mounts from yr-gateway-tls.
    certificate, key = make_key_pair(c.GATEWAY_SERVER_NAME)
    tls_dir = tmp_path / "gateway-tls"
    tls_dir.mkdir(mode=0o755)
    for name, data in (("tls.crt", certificate), ("tls.key", key)):
        (tls_dir / name).write_bytes(data)
        (tls_dir / name).chmod(0o644)  # readable by the container's uid 10001
    port = free_port()
    flags = (*host_network(api_server), "-e", f"YR_GATEWAY_PORT={port}")
    flags += ("-e", "YR_NAMESPACE=default", "-e", "YR_GATEWAY_HOST=127.0.0.1")
    flags += ("-v", f"{tls_dir}:/tls:ro")
    flags += ("-e", f"{c.ENV_GATEWAY_TLS_CERT_FILE}=/tls/tls.crt")
    flags += ("-e", f"{c.ENV_GATEWAY_TLS_KEY_FILE}=/tls/tls.key")
    argv = ("python", "-m", "yr.gateway")
    pinned = PinnedServer(certificate, c.GATEWAY_SERVER_NAME)
    with (
        container(docker, *flags, argv=argv) as container_id,
        pinned.secure_channel(f"127.0.0.1:{port}", CHANNEL_OPTIONS) as channel,
    ):
        try:
            grpc.channel_ready_future(channel).result(timeout=90)
        except grpc.FutureTimeoutError:
            raise AssertionError(logs(docker, container_id)) from None
        # The gateway itself answers (a status, not a connection failure) for a route to
        # an instance that does not exist.
        request = yr_pb2.CallRequest(caller="test", seq=0)
        metadata = ((ROUTE_METADATA_KEY, "missing"), (PROTOCOL_METADATA_KEY, str(PROTOCOL_VERSION)))
        with pytest.raises(grpc.RpcError) as caught:
            yr_pb2_grpc.InstanceStub(channel).Call(request, metadata=metadata, timeout=30)
        details = caught.value.details() or ""
        assert details and "failed to connect" not in details, logs(docker, container_id)
