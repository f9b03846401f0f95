"""The local cluster's node runs pods as processes and reports them as a kubelet would."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kubernetes.client import CoreV1Api

from tests.cluster.fixtures import LocalCluster
from tests.cluster.testkit import (
    container_pid,
    grpc_server_pod,
    is_ready,
    pod_manifest,
    python_pod,
    terminated,
    wait_pod,
    wait_pod_gone,
)
from tests.support import wait_for


@pytest.fixture(scope="module")
def cluster(module_local_cluster) -> LocalCluster:
    return module_local_cluster(cpu="16", memory="32Gi")


@pytest.fixture
def core(cluster: LocalCluster) -> Iterator[CoreV1Api]:
    with cluster.api_client() as client:
        yield CoreV1Api(client)


def _health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        request = health_pb2.HealthCheckRequest(service="")
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=5).status


def test_a_pod_serving_on_its_ip_becomes_running_ready_and_reachable(
    core: CoreV1Api, namespace: str
):
    core.create_namespaced_pod(namespace, grpc_server_pod("serving"))

    pod = wait_pod(core, namespace, "serving", is_ready, "Ready")

    assert pod.status.phase == "Running"
    assert pod.status.pod_ip.startswith("127.") and pod.status.pod_ip != "127.0.0.1"
    assert _health(f"{pod.status.pod_ip}:50051") == health_pb2.HealthCheckResponse.SERVING


def test_two_pods_listen_on_the_same_port_at_their_own_addresses(core: CoreV1Api, namespace: str):
    for name in ("twin-a", "twin-b"):
        core.create_namespaced_pod(namespace, grpc_server_pod(name))

    pods = [wait_pod(core, namespace, name, is_ready, "Ready") for name in ("twin-a", "twin-b")]

    assert pods[0].status.pod_ip != pods[1].status.pod_ip


def test_deleting_a_pod_stops_its_process_and_then_the_pod_is_gone(core: CoreV1Api, namespace: str):
    core.create_namespaced_pod(namespace, grpc_server_pod("doomed"))
    process = psutil.Process(container_pid(wait_pod(core, namespace, "doomed", is_ready, "Ready")))

    core.delete_namespaced_pod("doomed", namespace)

    wait_pod_gone(core, namespace, "doomed")
    assert not process.is_running()


def test_a_pod_ignoring_sigterm_stays_terminating_until_its_grace_period_ends(
    core: CoreV1Api,
    tmp_path,
    namespace: str,
):
    armed = tmp_path / "armed"
    code = (
        "import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        " pathlib.Path(sys.argv[1]).touch(); time.sleep(600)"
    )
    core.create_namespaced_pod(
        namespace, pod_manifest("stubborn", ["python", "-c", code, str(armed)], grace=1)
    )
    pod = wait_pod(core, namespace, "stubborn", lambda p: p.status.phase == "Running", "Running")
    wait_for(armed.exists, timeout=10, what="the pod to ignore SIGTERM")
    process = psutil.Process(container_pid(pod))
    started = time.monotonic()

    core.delete_namespaced_pod("stubborn", namespace)

    assert core.read_namespaced_pod("stubborn", namespace).metadata.deletion_timestamp is not None
    assert process.is_running()
    wait_pod_gone(core, namespace, "stubborn")
    assert time.monotonic() - started >= 1.0
    assert not process.is_running()


def test_a_crashing_pod_reports_its_exit_code(core: CoreV1Api, namespace: str):
    core.create_namespaced_pod(namespace, python_pod("crasher", "import sys; sys.exit(3)"))

    pod = wait_pod(core, namespace, "crasher", terminated, "terminated")

    assert pod.status.phase == "Failed"
    assert (terminated(pod).exit_code, terminated(pod).reason) == (3, "Error")


def test_a_pod_killed_by_a_signal_reports_128_plus_the_signal(core: CoreV1Api, namespace: str):
    code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    core.create_namespaced_pod(namespace, python_pod("killed", code))

    state = terminated(wait_pod(core, namespace, "killed", terminated, "terminated"))

    assert (state.exit_code, state.reason, state.message) == (137, "Error", None)


def test_a_pod_that_exits_zero_succeeds(core: CoreV1Api, namespace: str):
    core.create_namespaced_pod(namespace, python_pod("finisher", "print('done')"))

    pod = wait_pod(core, namespace, "finisher", terminated, "terminated")

    assert pod.status.phase == "Succeeded"
    assert (terminated(pod).exit_code, terminated(pod).reason) == (0, "Completed")


def test_a_missing_executable_is_a_start_error(core: CoreV1Api, namespace: str):
    core.create_namespaced_pod(namespace, pod_manifest("nobinary", ["no-such-program-anywhere"]))

    pod = wait_pod(core, namespace, "nobinary", terminated, "terminated")

    assert pod.status.phase == "Failed"
    assert (terminated(pod).exit_code, terminated(pod).reason) == (128, "StartError")
    assert "executable file not found" in terminated(pod).message


def test_an_exec_readiness_probe_gates_readiness(core: CoreV1Api, tmp_path, namespace: str):
    flag = tmp_path / "ready"
    probe = {"exec": {"command": ["test", "-f", str(flag)]}, "periodSeconds": 1}
    core.create_namespaced_pod(
        namespace, python_pod("gated", "import time; time.sleep(600)", probe=probe)
    )
    pod = wait_pod(core, namespace, "gated", lambda p: p.status.phase == "Running", "Running")
    assert not is_ready(pod)

    flag.touch()

    wait_pod(core, namespace, "gated", is_ready, "Ready")


ENV_DUMP = """
import json, os
keys = ["POD_NAME", "POD_NAMESPACE", "POD_UID", "POD_IP", "TOKEN", "KUBECONFIG", "TOKEN_FILE"]
env = {k: os.environ.get(k) for k in keys}
env["file"] = open(os.environ["TOKEN_FILE"]).read()
env["mode"] = oct(os.stat(os.environ["TOKEN_FILE"]).st_mode & 0o777)
print(json.dumps(env))
"""


def _field(name: str, path: str) -> dict:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _env_pod(name: str) -> dict:
    env = [
        _field("POD_NAME", "metadata.name"),
        _field("POD_NAMESPACE", "metadata.namespace"),
        _field("POD_UID", "metadata.uid"),
        {
            "name": "TOKEN",
            "valueFrom": {"secretKeyRef": {"name": f"{name}-secret", "key": "token"}},
        },
        {"name": "TOKEN_FILE", "value": "/var/run/secrets/test/token"},
    ]
    body = python_pod(name, ENV_DUMP, env=env)
    secret = {"secretName": f"{name}-secret", "defaultMode": 0o440}
    body["spec"]["volumes"] = [{"name": "creds", "secret": secret}]
    body["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "creds", "mountPath": "/var/run/secrets/test", "readOnly": True}
    ]
    return body


def _secret(name: str, token: str) -> dict:
    return {"metadata": {"name": name}, "stringData": {"token": token}}


def test_env_gets_field_refs_and_secrets_and_secret_volumes_are_files(
    core: CoreV1Api,
    cluster: LocalCluster,
    namespace: str,
):
    core.create_namespaced_secret(namespace, _secret("envdump-secret", "s3cret"))
    created = core.create_namespaced_pod(namespace, _env_pod("envdump"))

    pod = wait_pod(core, namespace, "envdump", lambda p: p.status.phase == "Succeeded", "Succeeded")

    env = json.loads(cluster.pod_log(namespace, "envdump"))
    assert env["POD_NAME"] == "envdump" and env["POD_NAMESPACE"] == namespace
    assert env["POD_UID"] == created.metadata.uid
    assert env["POD_IP"] == pod.status.pod_ip
    assert env["TOKEN"] == "s3cret" and env["file"] == "s3cret" and env["mode"] == "0o440"


def test_a_pod_waits_for_a_missing_secret_then_starts(
    core: CoreV1Api, cluster: LocalCluster, namespace: str
):
    core.create_namespaced_pod(namespace, _env_pod("latecomer"))

    def waiting_reason(pod) -> str | None:
        statuses = pod.status.container_statuses or []
        waiting = statuses[0].state.waiting if statuses else None
        return waiting.reason if waiting else None

    wait_pod(core, namespace, "latecomer", waiting_reason, "waiting on its Secret")
    assert core.read_namespaced_pod("latecomer", namespace).status.phase == "Pending"

    core.create_namespaced_secret(namespace, _secret("latecomer-secret", "late"))

    wait_pod(core, namespace, "latecomer", lambda p: p.status.phase == "Succeeded", "Succeeded")
    assert json.loads(cluster.pod_log(namespace, "latecomer"))["TOKEN"] == "late"


def test_pod_start_latency_is_small(core: CoreV1Api, namespace: str):
    started = time.monotonic()
    core.create_namespaced_pod(namespace, python_pod("quick", "import time; time.sleep(600)"))

    wait_for(
        lambda: core.read_namespaced_pod("quick", namespace).status.phase == "Running",
        timeout=10,
        what="Running",
    )

    assert time.monotonic() - started < 3.0


def test_closing_a_followed_log_stream_logs_no_traceback_in_the_api_server(
    core: CoreV1Api, cluster: LocalCluster, namespace: str
):
    code = "import time\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.01)"
    core.create_namespaced_pod(namespace, python_pod("chatty", code))
    wait_pod(core, namespace, "chatty", lambda p: p.status.phase == "Running", "Running")
    stream = core.read_namespaced_pod_log("chatty", namespace, follow=True, _preload_content=False)
    stream.read(16)
    stream.close()
    seen = cluster.pod_log(namespace, "chatty").count("tick")

    # The server polls the log every 50 ms: once 50 more lines exist it has tried to send some.
    wait_for(
        lambda: cluster.pod_log(namespace, "chatty").count("tick") > seen + 50,
        timeout=30,
        what="the pod to log on after the stream closed",
    )

    assert "Traceback" not in (cluster.workdir / "apiserver.log").read_text()


def test_a_python_process_binding_the_wildcard_address_gets_its_pods_ip(
    core: CoreV1Api, cluster: LocalCluster, namespace: str
):
    code = (
        "import socket\n"
        "s = socket.socket()\n"
        "s.bind(('0.0.0.0', 0))\n"
        "print(s.getsockname()[0], flush=True)\n"
    )
    core.create_namespaced_pod(namespace, python_pod("binder", code))

    pod = wait_pod(core, namespace, "binder", terminated, "terminated")

    assert cluster.pod_log(namespace, "binder").strip() == pod.status.pod_ip
