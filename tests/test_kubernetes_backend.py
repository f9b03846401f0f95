"""The SDK's Kubernetes backend end to end: driver → YRInstance → operator → Pod → gRPC.

Runs against the local cluster emulation (tests/cluster) with the real operator process.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest
from kubernetes import client as k8s

import yr
from tests.cluster.chart_rbac import NAMESPACED_RBAC, install_chart_rbac
from tests.cluster.fixtures import fresh_namespace
from tests.cluster.operated import kubernetes_session, yrinstances
from tests.cluster.operator_process import operator_env
from tests.k8s_instances import Lead, Worker
from tests.k8s_tls import gateway_channel, install_gateway_key_pair
from tests.support import call_in_flight, wait_for

REPO = pathlib.Path(__file__).parents[1]
GROUP, VERSION, PLURAL = "yr.dev", "v1alpha1", "yrinstances"


def _instances(cluster, namespace: str) -> dict[str, dict]:
    return {item["metadata"]["name"]: item for item in yrinstances(cluster, namespace)}


def _pods(cluster, namespace: str) -> dict[str, k8s.V1Pod]:
    pods = k8s.CoreV1Api(cluster.api_client()).list_namespaced_pod(namespace).items
    return {pod.metadata.name: pod for pod in pods if pod.metadata.deletion_timestamp is None}


def _seed_program(cluster, namespace: str, **extra_env: str) -> subprocess.CompletedProcess:
    """Run the tutorial program, unmodified, against the cluster."""
    env = dict(cluster.env, YR_BACKEND="kubernetes", YR_NAMESPACE=namespace, **extra_env)
    return subprocess.run(
        [sys.executable, str(REPO / "examples" / "tree_training.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _assert_both_reports(finished: subprocess.CompletedProcess) -> None:
    assert finished.returncode == 0, finished.stderr
    assert "results: ['Loss: 10.0', 'Loss: 10.0']" in finished.stdout
    assert "results: ['Loss: 100.0', 'Loss: 100.0']" in finished.stdout


@pytest.fixture(scope="module")
def seed_run(cluster, k8s_tools) -> subprocess.CompletedProcess:
    """One run of the tutorial program in a namespace of its own: the tests below read
    different facts of the same run."""
    with fresh_namespace(cluster) as namespace:
        install_chart_rbac(cluster, k8s_tools / "helm", namespace, kinds=NAMESPACED_RBAC)
        return _seed_program(cluster, namespace)


def test_the_seed_program_runs_unmodified_with_yr_backend_kubernetes(seed_run):
    _assert_both_reports(seed_run)


def test_what_instance_pods_print_reaches_the_driver_prefixed_by_pod(seed_run):
    training = [line for line in seed_run.stdout.splitlines() if "is training data shard" in line]
    assert len(training) == 4
    assert all(line.startswith("(trainingworker-") for line in training)


SAY_THEN_FINALIZE = textwrap.dedent(
    """
    import yr
    from tests.k8s_instances import Worker
    yr.init(yr.Config(backend="kubernetes"))  # YR_NAMESPACE
    worker = Worker.options(yr.InvokeOptions(cpu=100, memory=64)).invoke()
    lines = ["last words 1", "last words 2", "last words 3"]
    assert yr.get(worker.say.invoke(lines), timeout=120) == 3
    yr.finalize()
    """
)


def test_what_a_pod_prints_just_before_finalize_still_reaches_the_driver(
    cluster, instance_namespace
):
    finished = subprocess.run(
        [sys.executable, "-c", SAY_THEN_FINALIZE],
        env=dict(cluster.env, YR_NAMESPACE=instance_namespace),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert finished.returncode == 0, finished.stderr
    said = [line.split(") ", 1)[-1] for line in finished.stdout.splitlines()]
    assert [line for line in said if line.startswith("last words")] == [
        "last words 1",
        "last words 2",
        "last words 3",
    ]


def test_each_instance_is_a_yrinstance_and_a_pod_owned_along_the_tree(cluster, session):
    leads = [Lead.invoke(2), Lead.invoke(2)]
    assert (
        yr.get([lead.train.invoke(0.01) for lead in leads], timeout=120)
        == [["shard 0 loss 10.0", "shard 1 loss 10.0"]] * 2
    )
    instances, pods = _instances(cluster, session), _pods(cluster, session)
    assert len(instances) == 6 and len(pods) == 6
    assert {p.spec.containers[0].resources.requests["cpu"] for p in pods.values()} == {"1000m"}
    for lead in leads:
        lead_obj = instances[lead.instance_id]
        assert lead_obj["metadata"]["ownerReferences"][0]["kind"] == "Lease"
        lead_pod = pods[lead_obj["status"]["podName"]]
        for worker_name in yr.get(lead.worker_names.invoke()):
            owner = instances[worker_name]["metadata"]["ownerReferences"][0]
            assert (owner["kind"], owner["uid"]) == ("Pod", lead_pod.metadata.uid)


def test_deleting_a_supervisor_collects_its_workers_while_the_other_keeps_serving(cluster, session):
    doomed, survivor = Lead.invoke(2), Lead.invoke(2)
    yr.get([doomed.train.invoke(0.1), survivor.train.invoke(0.1)], timeout=120)
    doomed_workers = yr.get(doomed.worker_names.invoke())
    custom = k8s.CustomObjectsApi(cluster.api_client())
    custom.delete_namespaced_custom_object(GROUP, VERSION, session, PLURAL, doomed.instance_id)

    def collected() -> bool:
        names = set(_instances(cluster, session))
        pods = _pods(cluster, session)
        # Payload Secrets go once their pods are gone, not merely terminating.
        secrets = k8s.CoreV1Api(cluster.api_client()).list_namespaced_secret(session).items
        payloads = [s for s in secrets if s.metadata.name.startswith(tuple(doomed_workers))]
        return (
            not (names & {doomed.instance_id, *doomed_workers}) and len(pods) == 3 and not payloads
        )

    wait_for(collected, timeout=60, what="the supervisor's subtree to be collected")
    assert len(yr.get(survivor.train.invoke(0.1), timeout=60)) == 2


def test_an_instance_calls_siblings_it_was_handed_that_were_ready_before_it_started(session):
    from tests.k8s_instances import Caller, Worker

    siblings = [Worker.options(yr.InvokeOptions(cpu=100, memory=128)).invoke() for _ in range(2)]
    # Ready, with no more events to come.
    pids = yr.get([sibling.pid.invoke() for sibling in siblings], timeout=60)
    caller = Caller.invoke()

    assert yr.get(caller.pids_of.invoke(*siblings), timeout=90) == pids


def test_a_tree_that_does_not_fit_reports_the_schedulers_message(cluster, session):
    # 8 CPUs: the lead and seven workers fit, the eighth worker cannot. The timeout applies to
    # every worker: long enough for the seven pods to be Running (< 1 s each when quiet) on a
    # loaded machine, and what the test waits for the eighth.
    workers = yr.InvokeOptions(cpu=1000, memory=128, schedule_timeout_ms=8000)
    lead = Lead.invoke(8, workers)
    with pytest.raises(yr.YRSchedulingError, match="Unschedulable: .*Insufficient cpu"):
        yr.get(lead.train.invoke(0.1), timeout=120)
    pending = [
        obj["status"]
        for obj in _instances(cluster, session).values()
        if (obj.get("status") or {}).get("phase") == "Pending"
    ]
    # The real scheduler's message goes on (a preemption clause): assert its Kubernetes part.
    assert [(s["reason"], s["message"].split(" preemption:")[0]) for s in pending] == [
        ("Unschedulable", "0/1 nodes are available: 1 Insufficient cpu.")
    ]


def test_an_instance_pod_refuses_a_call_without_the_session_token(session):
    import grpc

    from yr.protocol import yr_pb2, yr_pb2_grpc

    worker = Worker.invoke()
    yr.get(worker.pid.invoke(), timeout=60)
    address = yr.session.current().runtime.endpoint(worker.instance_id).result(10).address
    runtime = yr.session.current().runtime
    with (
        runtime.open_channel(address, []) as channel,
        pytest.raises(grpc.RpcError) as caught,
    ):
        yr_pb2_grpc.InstanceStub(channel).Hello(yr_pb2.HelloRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_killed_worker_pod_restarts_and_a_call_in_flight_gets_the_died_error(
    cluster, session, tmp_path
):
    worker = Worker.options(yr.InvokeOptions(cpu=500, memory=128, recover_retry_times=1)).invoke()
    pid = yr.get(worker.pid.invoke(), timeout=60)
    in_flight = call_in_flight(worker, tmp_path)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(yr.YRInstanceDiedError, match="SIGKILL"):
        yr.get(in_flight, timeout=60)
    assert yr.get(worker.pid.invoke(), timeout=60) != pid
    # The call may be answered before the probe marks the new pod Ready (the SDK calls a
    # Running pod once it is SERVING), so Ready comes now or a probe period later.
    wait_for(
        lambda: _instances(cluster, session)[worker.instance_id]["status"]["phase"] == "Ready",
        timeout=30,
        what="the restarted instance to be Ready",
    )
    assert _instances(cluster, session)[worker.instance_id]["status"]["restarts"] == 1

    pid = yr.get(worker.pid.invoke(), timeout=60)
    in_flight = call_in_flight(worker, tmp_path)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(yr.YRInstanceDiedError, match="will not be restarted"):
        yr.get(in_flight, timeout=60)
    wait_for(
        lambda: _instances(cluster, session)[worker.instance_id]["status"]["phase"] == "Failed",
        timeout=30,
        what="the instance to be Failed",
    )
    assert "SIGKILL" in _instances(cluster, session)[worker.instance_id]["status"]["message"]


def test_a_class_from_a_module_the_pods_lack_fails_pointing_to_pickling_by_value(
    session, tmp_path, monkeypatch
):
    (tmp_path / "h4_driver_only.py").write_text(
        "import yr\n\n\n@yr.instance\nclass Private:\n    def ping(self):\n        return 1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))  # the driver sees it, the pods do not
    from h4_driver_only import Private

    instance = Private.options(yr.InvokeOptions(cpu=100, memory=64)).invoke()
    with pytest.raises(ModuleNotFoundError) as caught:
        yr.get(instance.ping.invoke(), timeout=60)
    text = str(caught.value)
    assert "No module named 'h4_driver_only'" in text
    assert "cloudpickle.register_pickle_by_value" in text and "instance.image" in text


def test_a_payload_over_the_object_size_limit_is_refused_and_creates_nothing(cluster, session):
    with pytest.raises(yr.YRSerializationError, match="more than the .* MiB a Kubernetes"):
        Lead.invoke(b"x" * (2 * 1024 * 1024))
    assert not _instances(cluster, session)


DRIVER = textwrap.dedent(
    """
    import sys, time
    import yr
    from tests.k8s_instances import Lead
    yr.init(yr.Config(backend="kubernetes"))  # YR_NAMESPACE
    lead = Lead.invoke(1)
    yr.get(lead.train.invoke(0.5), timeout=120)
    print("ready", flush=True)
    time.sleep(600)
    """
)


def test_a_killed_drivers_tree_is_collected_once_its_lease_expires(cluster, instance_namespace):
    # Long enough that a loaded machine still renews in time; short enough to wait for.
    env = dict(cluster.env, YR_NAMESPACE=instance_namespace, YR_LEASE_DURATION_SECONDS="6")
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER], env=env, cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert driver.stdout.readline().strip() == "ready"
        assert len(_instances(cluster, instance_namespace)) == 2
        driver.send_signal(signal.SIGKILL)
        driver.wait(10)
        wait_for(
            lambda: (
                not _instances(cluster, instance_namespace)
                and not _pods(cluster, instance_namespace)
            ),
            timeout=60,
            what="the dead driver's tree to be collected",
        )
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()


@pytest.fixture
def gateway(cluster, instance_namespace, tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "yr.gateway"],
        env=dict(
            operator_env(cluster.kubeconfig_for(instance_namespace, "yr-gateway")),
            YR_NAMESPACE=instance_namespace,
            YR_GATEWAY_PORT="0",
            YR_GATEWAY_HOST="127.0.0.1",
            **install_gateway_key_pair(cluster.api_client(), instance_namespace, tmp_path / "tls"),
        ),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield process, process.stdout.readline().split()[-1]
    finally:
        process.terminate()
        process.wait(15)


def test_a_driver_outside_the_cluster_calls_instances_through_the_gateway(
    cluster, instance_namespace, gateway
):
    process, address = gateway
    with kubernetes_session(cluster, instance_namespace, gateway=address):
        worker = Worker.invoke()
        assert yr.get(worker.train.invoke(1, 0.1), timeout=60) == "shard 1 loss 1.0"
        endpoint = yr.session.current().runtime.endpoint(worker.instance_id).result(10)
        assert endpoint.address == f"{address}#{worker.instance_id}"
        connections = psutil.Process(process.pid).net_connections(kind="tcp")
        assert any(c.raddr and c.raddr.port == 50051 for c in connections)  # it forwarded


def test_the_seed_program_runs_through_the_gateway(cluster, instance_namespace, gateway):
    _, address = gateway
    _assert_both_reports(_seed_program(cluster, instance_namespace, YR_GATEWAY=address))


def test_the_gateway_refuses_to_route_to_an_unknown_instance(cluster, instance_namespace, gateway):
    import grpc

    from yr.protocol import ROUTE_METADATA_KEY, TOKEN_METADATA_KEY, yr_pb2, yr_pb2_grpc

    _, address = gateway
    metadata = ((ROUTE_METADATA_KEY, "nobody"), (TOKEN_METADATA_KEY, "a-token"))
    with (
        gateway_channel(cluster.api_client(), instance_namespace, address) as channel,
        pytest.raises(grpc.RpcError) as caught,
    ):
        yr_pb2_grpc.InstanceStub(channel).Hello(
            yr_pb2.HelloRequest(), metadata=metadata, timeout=10
        )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "no ready instance 'nobody'" in caught.value.details()
