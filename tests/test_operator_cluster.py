"""The operator end to end on the local cluster: the real `yr_operator` process, real pods.

Each instance pod runs the real instance server (`python -m yr.server`) with a payload of
`collections.Counter`, so readiness is the server's own gRPC health.
"""

from __future__ import annotations

import base64
import collections
import datetime
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from tests.cluster.operated import operated_cluster
from tests.cluster.operator_process import OperatorProcess
from tests.cluster.testkit import container_pid
from tests.cluster.tools import K8sTools
from tests.support import wait_for
from yr.contract import session_server_name
from yr.tls import make_key_pair

REPO = Path(__file__).resolve().parents[1]
GROUP, VERSION, PLURAL = "yr.dev", "v1alpha1", "yrinstances"
SESSION = "optest"
BACKOFF = "0.5"  # YR_RESTART_BACKOFF_SECONDS: long enough to see Restarting, short for tests
LEASE_GRACE_S = 1.0  # YR_LEASE_GRACE_SECONDS: no driver here renews a Lease late


class Env:
    """The cluster, the operator and the API clients one test needs."""

    def __init__(self, cluster: Any, operator: OperatorProcess, namespace: str) -> None:
        self.cluster = cluster
        self.operator = operator
        self.ns = namespace
        self.api = cluster.api_client()
        self.core = k8s.CoreV1Api(self.api)
        self.custom = k8s.CustomObjectsApi(self.api)
        self.coordination = k8s.CoordinationV1Api(self.api)

    def create(self, name: str, **spec: Any) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "YRInstance",
            "metadata": {"name": name, "ownerReferences": spec.pop("owners", [])},
            "spec": {
                "className": "collections.Counter",
                "cpu": 100,
                "memory": 64,
                "payloadSecret": "counter-payload",
                "session": SESSION,
                **spec,
            },
        }
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, body)

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def status(self, name: str) -> dict[str, Any]:
        return (self.get(name) or {}).get("status") or {}

    def pods_of(self, name: str) -> list[k8s.V1Pod]:
        pods = self.core.list_namespaced_pod(
            self.ns, label_selector=f"yr.dev/instance={name}"
        ).items
        return [p for p in pods if p.metadata.labels.get("yr.dev/instance") == name]

    def wait_phase(self, name: str, phase: str, timeout: float = 30.0) -> dict[str, Any]:
        return wait_for(
            lambda: (st := self.status(name)).get("phase") == phase and st,
            timeout=timeout,
            what=f"YRInstance {name} to be {phase} (now {self.status(name)})",
        )

    def phases_until(
        self, name: str, done: Callable[[dict[str, Any]], bool], *, since: str, timeout: float = 30
    ) -> list[tuple[str, int]]:
        """Every (phase, restarts) the watch shows after resourceVersion `since`, until done."""
        seen: list[tuple[str, int]] = []
        stream = k8s_watch.Watch().stream(
            self.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self.ns,
            PLURAL,
            resource_version=since,
            timeout_seconds=int(timeout),
        )
        for event in stream:
            obj = event["object"]
            if obj["metadata"]["name"] != name:
                continue
            st = obj.get("status") or {}
            step = (st.get("phase"), st.get("restarts"))
            if not seen or seen[-1] != step:
                seen.append(step)
            if done(st):
                return seen
        raise TimeoutError(f"{name}: saw {seen} but not the end state")


@pytest.fixture(scope="module")
def cluster(module_local_cluster: Callable[..., Any], k8s_tools: K8sTools) -> Iterator[Any]:
    """The operator, cluster-wide, as the chart's yr-operator ServiceAccount with its RBAC."""
    with operated_cluster(
        module_local_cluster,
        k8s_tools / "helm",
        cpu="4",
        memory="8Gi",
        YR_RESTART_BACKOFF_SECONDS=BACKOFF,
        YR_LEASE_GRACE_SECONDS=str(LEASE_GRACE_S),
    ) as cluster:
        yield cluster


@pytest.fixture
def env(cluster: Any, instance_namespace: str) -> Iterator[Env]:
    """One test's namespace: the chart's instance account and Role there, and the Secrets."""
    namespace = instance_namespace
    e = Env(cluster, cluster.operator, namespace)
    payload = base64.b64encode(cloudpickle.dumps((collections.Counter, (), {}))).decode()
    e.core.create_namespaced_secret(
        namespace, {"metadata": {"name": "counter-payload"}, "data": {"payload": payload}}
    )
    # As a driver makes it: the token and the session's TLS key pair (the pod serves TLS).
    certificate, key = make_key_pair(session_server_name(SESSION))
    e.core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": f"yr-session-{SESSION}"},
            "stringData": {
                "token": "t0k3n",
                "tls.crt": certificate.decode(),
                "tls.key": key.decode(),
            },
        },
    )
    try:
        yield e
    finally:
        e.api.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def stays(predicate: Callable[[], bool], *, seconds: float) -> bool:
    """Whether `predicate` holds at every poll for `seconds` (the negative of wait_for)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not predicate():
            return False
        time.sleep(0.05)  # poll interval, not synchronisation
    return True


def kill_pod_process(e: Env, pod_name: str) -> None:
    os.kill(container_pid(e.core.read_namespaced_pod(pod_name, e.ns)), signal.SIGKILL)


def test_yrinstance_gets_exactly_one_pod_with_its_cpu_and_owner(env: Env) -> None:
    name = unique("one")
    yri = env.create(name, cpu=250, memory=96)
    pods = wait_for(lambda: env.pods_of(name), timeout=20, what=f"a pod for {name}")
    env.wait_phase(name, "Ready")
    pods = env.pods_of(name)
    assert [p.metadata.name for p in pods] == [f"{name}-0"]
    pod = pods[0]
    assert pod.spec.containers[0].resources.requests == {"cpu": "250m", "memory": "96Mi"}
    (owner,) = pod.metadata.owner_references
    assert (owner.kind, owner.name, owner.uid, owner.controller) == (
        "YRInstance",
        name,
        yri["metadata"]["uid"],
        True,
    )


def test_status_becomes_ready_with_the_pods_address(env: Env) -> None:
    name = unique("ready")
    env.create(name)
    st = env.wait_phase(name, "Ready")
    pod = env.core.read_namespaced_pod(f"{name}-0", env.ns)
    assert (st["podName"], st["podIP"], st["port"], st["node"], st["restarts"]) == (
        f"{name}-0",
        pod.status.pod_ip,
        50051,
        "node-1",
        0,
    )
    assert st["conditions"][0]["type"] == "Ready" and st["conditions"][0]["status"] == "True"


def test_each_phase_transition_is_posted_as_an_event(env: Env) -> None:
    name = unique("events")
    uid = env.create(name)["metadata"]["uid"]
    env.wait_phase(name, "Ready")

    def reasons() -> set[str]:
        events = env.core.list_namespaced_event(env.ns).items
        return {e.reason for e in events if e.involved_object.uid == uid}

    wait_for(
        lambda: {"Pending", "Running", "Ready"} <= reasons(), timeout=10, what=f"events of {name}"
    )


def test_instance_too_big_for_the_node_is_pending_unschedulable(env: Env) -> None:
    name = unique("huge")
    env.create(name, cpu=64000)
    st = wait_for(
        lambda: (s := env.status(name)).get("reason") == "Unschedulable" and s,
        timeout=20,
        what=f"{name} to be Unschedulable",
    )
    assert st["phase"] == "Pending"
    assert st["message"].startswith("0/1 nodes are available: 1 Insufficient cpu.")
    env.custom.delete_namespaced_custom_object(GROUP, VERSION, env.ns, PLURAL, name)


def test_killed_pod_restarts_within_the_budget(env: Env) -> None:
    name = unique("restart")
    env.create(name, maxRestarts=1)
    env.wait_phase(name, "Ready")
    since = env.get(name)["metadata"]["resourceVersion"]
    kill_pod_process(env, f"{name}-0")
    seen = env.phases_until(
        name, lambda st: st.get("phase") == "Ready" and st.get("restarts") == 1, since=since
    )
    assert ("Restarting", 1) in seen and seen[-1] == ("Ready", 1)
    wait_for(
        lambda: [p.metadata.name for p in env.pods_of(name)] == [f"{name}-1"],
        timeout=10,
        what="old pod gone",
    )


def test_killed_pod_without_budget_fails_with_the_signal(env: Env) -> None:
    name = unique("fail")
    env.create(name, maxRestarts=0)
    env.wait_phase(name, "Ready")
    kill_pod_process(env, f"{name}-0")
    st = env.wait_phase(name, "Failed")
    assert (st["reason"], st["message"]) == ("Signal", "killed by signal 9 (SIGKILL)")
    wait_for(
        lambda: not env.pods_of(name), timeout=10, what=f"the failed pod of {name} to be deleted"
    )


def test_pod_exiting_with_a_code_fails_with_that_code(env: Env) -> None:
    # The instance server refuses to serve without a session token: it exits with code 1.
    env.core.create_namespaced_secret(
        env.ns, {"metadata": {"name": "yr-session-tokenless"}, "stringData": {"token": ""}}
    )
    name = unique("exit")
    env.create(name, session="tokenless")
    st = env.wait_phase(name, "Failed")
    assert st["reason"] == "Error" and st["message"].startswith("exit code 1")
    ended = st["lastTermination"]
    assert (ended["incarnation"], ended["reason"], ended["exitCode"]) == (0, "Error", 1)
    # FallbackToLogsOnError: the container's last words travel as data.
    assert "YR_SESSION_TOKEN is not set" in ended["message"]


def test_operator_restart_during_creation_leaves_one_pod_per_instance(env: Env) -> None:
    names = [unique(f"burst{i}") for i in range(5)]
    try:
        for i, name in enumerate(names):
            env.create(name)
            if i == 2:
                env.operator.kill()  # mid-burst, SIGKILL: no chance to clean up
        env.operator.start()
        for name in names:
            env.wait_phase(name, "Ready", timeout=40)
    finally:
        if env.operator.proc is None or env.operator.proc.poll() is not None:
            env.operator.start()
    assert {name: [p.metadata.name for p in env.pods_of(name)] for name in names} == {
        name: [f"{name}-0"] for name in names
    }


def create_driver_lease(e: Env, session: str, *, duration: int) -> k8s.V1Lease:
    renewed = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return e.coordination.create_namespaced_lease(
        e.ns,
        {
            "metadata": {
                "name": f"yr-driver-{session}",
                "labels": {"yr.dev/driver": "true", "yr.dev/session": session},
            },
            "spec": {
                "holderIdentity": session,
                "leaseDurationSeconds": duration,
                "renewTime": renewed,
            },
        },
    )


def test_expired_driver_leases_are_deleted_and_their_trees_collected(env: Env) -> None:
    started = time.time()
    # Two drivers: the expiry loop must go on after its first deletion.
    leases = [create_driver_lease(env, unique("drv"), duration=d) for d in (2, 3)]
    names = [unique("leased") for _ in leases]
    for name, lease in zip(names, leases, strict=True):
        owner = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "name": lease.metadata.name,
            "uid": lease.metadata.uid,
        }
        env.create(name, owners=[owner])
    for name in names:
        wait_for(lambda n=name: env.pods_of(n), timeout=20, what=f"a pod for {name}")

    def lease_gone(lease: k8s.V1Lease) -> bool:
        try:
            env.coordination.read_namespaced_lease(lease.metadata.name, env.ns)
        except ApiException as e:
            return e.status == 404
        return False

    for lease in leases:
        wait_for(
            lambda x=lease: lease_gone(x), timeout=20, what=f"{lease.metadata.name} to be deleted"
        )
    assert time.time() >= started + 3 + LEASE_GRACE_S, "deleted before it expired and its grace"
    for name in names:
        wait_for(
            lambda n=name: env.get(n) is None and not env.pods_of(n),
            timeout=20,
            what=f"{name} collected",
        )


def test_deleted_yrinstance_loses_its_pod_for_good(env: Env) -> None:
    name = unique("deleted")
    env.create(name)
    wait_for(lambda: env.pods_of(name), timeout=20, what=f"a pod for {name}")
    env.custom.delete_namespaced_custom_object(GROUP, VERSION, env.ns, PLURAL, name)
    wait_for(lambda: not env.pods_of(name), timeout=20, what=f"the pod of {name} to be collected")
    # A re-creation would follow the deletion event at once; a second of absence settles it.
    assert stays(lambda: not env.pods_of(name), seconds=1.0), "the operator re-created the pod"


def test_no_finalizer_ever_appears_on_a_yrinstance(env: Env) -> None:
    name = unique("nofin")
    since = env.core.list_namespaced_pod(env.ns).metadata.resource_version
    env.create(name, maxRestarts=1)
    env.wait_phase(name, "Ready")
    kill_pod_process(env, f"{name}-0")
    env.wait_phase(name, "Ready")
    env.custom.delete_namespaced_custom_object(GROUP, VERSION, env.ns, PLURAL, name)
    finalizers: list[Any] = []
    deleted = False
    stream = k8s_watch.Watch().stream(
        env.custom.list_namespaced_custom_object,
        GROUP,
        VERSION,
        env.ns,
        PLURAL,
        resource_version=since,
        timeout_seconds=20,
    )
    for event in stream:
        obj = event["object"]
        if obj["metadata"]["name"] == name:
            finalizers += obj["metadata"].get("finalizers") or []
            if event["type"] == "DELETED":
                deleted = True
                break
    assert deleted, f"the watch never reported {name} DELETED"
    assert finalizers == []


def test_spec_change_is_observed_and_applies_to_the_next_incarnation(env: Env) -> None:
    name = unique("respec")
    env.create(name, maxRestarts=0)
    env.wait_phase(name, "Ready")
    patch = {"spec": {"maxRestarts": 1}}
    generation = env.custom.patch_namespaced_custom_object(
        GROUP, VERSION, env.ns, PLURAL, name, patch
    )["metadata"]["generation"]
    wait_for(
        lambda: env.status(name).get("observedGeneration") == generation,
        timeout=10,
        what=f"{name} to observe generation {generation}",
    )
    kill_pod_process(env, f"{name}-0")
    wait_for(
        lambda: (st := env.status(name)).get("phase") == "Ready" and st.get("restarts") == 1,
        timeout=30,
        what=f"{name} to restart under its new budget",
    )


def test_a_payload_secret_the_instance_does_not_own_is_left_alone(env: Env) -> None:
    # Another owner's Secret: one more owner would change when the garbage collector takes it.
    name = unique("foreign")
    keeper = env.core.create_namespaced_config_map(env.ns, {"metadata": {"name": name}})
    owner = {"apiVersion": "v1", "kind": "ConfigMap", "name": name, "uid": keeper.metadata.uid}
    counter = env.core.read_namespaced_secret("counter-payload", env.ns)
    env.core.create_namespaced_secret(
        env.ns,
        {"metadata": {"name": name, "ownerReferences": [owner]}, "data": counter.data},
    )
    env.create(name, payloadSecret=name)
    env.wait_phase(name, "Ready")

    def owners() -> list[str]:
        secret = env.core.read_namespaced_secret(name, env.ns)
        return [ref.uid for ref in secret.metadata.owner_references]

    assert stays(lambda: owners() == [keeper.metadata.uid], seconds=2.0), owners()


def test_a_missing_payload_secret_shows_the_kubelets_failed_mount(env: Env) -> None:
    name = unique("nopayload")
    env.create(name, payloadSecret=f"{name}-missing")
    st = wait_for(
        lambda: (s := env.status(name)).get("reason") == "FailedMount" and s,
        timeout=30,
        what=f"{name} to show the kubelet's FailedMount",
    )
    assert st["phase"] == "Pending"
    assert f'secret "{name}-missing" not found' in st["message"]
    env.custom.delete_namespaced_custom_object(GROUP, VERSION, env.ns, PLURAL, name)


def test_an_instance_whose_owner_is_being_deleted_gets_no_pod_and_no_warning(env: Env) -> None:
    lease = create_driver_lease(env, unique("leaving"), duration=3600)
    lease_name = lease.metadata.name
    # A finalizer holds the Lease in its being-deleted state, as a slow teardown would.
    env.coordination.patch_namespaced_lease(
        lease_name, env.ns, {"metadata": {"finalizers": ["test.yr.dev/hold"]}}
    )
    env.coordination.delete_namespaced_lease(lease_name, env.ns)
    log = env.operator.log
    wait_for(
        lambda: f"{lease_name} is being deleted" in log.read_text(errors="replace"),
        timeout=20,
        what="the operator to see the Lease being deleted",
    )
    name = unique("orphaned")
    owner = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "name": lease_name,
        "uid": lease.metadata.uid,
    }
    env.create(name, owners=[owner])
    try:
        assert stays(lambda: not env.pods_of(name), seconds=2.0), "a pod was created"
        warnings = [
            e
            for e in env.core.list_namespaced_event(env.ns).items
            if e.involved_object.name == name and e.type == "Warning"
        ]
        assert warnings == []
    finally:
        env.coordination.patch_namespaced_lease(
            lease_name, env.ns, {"metadata": {"finalizers": None}}
        )
    wait_for(
        lambda: env.get(name) is None, timeout=20, what=f"{name} to be collected with its owner"
    )
