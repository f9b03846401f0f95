"""Resource groups on the emulated cluster, through the real operator and the yr driver API:
placeholder pods reserve bundles all or nothing, instances take them over, removal ends all."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kubernetes import client as k8s

import yr
from tests.cluster.chart_rbac import NAMESPACED_RBAC, install_chart_rbac
from tests.cluster.examples import run_example_on_cluster
from tests.cluster.operated import operated_cluster
from tests.cluster.tools import K8sTools
from tests.k8s_group_instances import GroupLead
from tests.k8s_instances import Lead, Worker
from tests.support import wait_for
from yr import contract as c

BIND_S = 3.0  # YR_RESOURCE_GROUP_BIND_SECONDS: how long a partial reservation may hold
ONE = {"CPU": 1000, "Memory": 128}
IN_GROUP = dict(cpu=1000, memory=128)
SHORT_SCHEDULE_TIMEOUT_MS = "5000"  # YR_SCHEDULE_TIMEOUT_MS: a pod is Running in < 1 s when quiet


@pytest.fixture(scope="module")
def cluster(module_local_cluster: Callable[..., Any], k8s_tools: K8sTools) -> Iterator[Any]:
    """Two nodes of 2 CPUs (4 in all) and the operator, as the chart's accounts."""
    with operated_cluster(
        module_local_cluster,
        k8s_tools / "helm",
        cpu="2",
        memory="4Gi",
        YR_RESOURCE_GROUP_BIND_SECONDS=str(BIND_S),
        YR_RESOURCE_GROUP_RETRY_SECONDS="0.5",
    ) as cluster:
        cluster.add_node("node-2", cpu="2", memory="4Gi")
        yield cluster


class Session:
    """A yr driver session in the test's namespace, and API clients to look at what it made."""

    def __init__(self, cluster: Any, namespace: str) -> None:
        self.cluster = cluster
        self.ns = namespace
        client = cluster.api_client()
        self.core = k8s.CoreV1Api(client)
        self.custom = k8s.CustomObjectsApi(client)
        self.coordination = k8s.CoordinationV1Api(client)

    def groups(self) -> dict[str, dict]:
        items = self.custom.list_namespaced_custom_object(
            c.GROUP, c.VERSION, self.ns, c.GROUP_PLURAL
        )["items"]
        return {g["metadata"]["name"]: g for g in items}

    def group_status(self, name: str) -> dict:
        return (self.groups().get(name) or {}).get("status") or {}

    def instances(self) -> dict[str, dict]:
        items = self.custom.list_namespaced_custom_object(c.GROUP, c.VERSION, self.ns, c.PLURAL)
        return {i["metadata"]["name"]: i for i in items["items"]}

    def pods(self, selector: str = "") -> list[k8s.V1Pod]:
        pods = self.core.list_namespaced_pod(self.ns, label_selector=selector).items
        return [p for p in pods if p.metadata.deletion_timestamp is None]

    def any_pods(self) -> bool:
        """Whether any pod is left, terminating ones included (their processes still run)."""
        return bool(self.core.list_namespaced_pod(self.ns).items)

    def placeholders(self, group: str) -> list[k8s.V1Pod]:
        selector = f"{c.RESOURCE_GROUP_LABEL}={group},{c.APP_LABEL}={c.PLACEHOLDER_APP_VALUE}"
        return self.pods(selector)

    def bound_placeholders(self, group: str) -> int:
        return sum(1 for p in self.placeholders(group) if p.spec.node_name)


@pytest.fixture
def session(cluster: Any, namespace: str, k8s_tools: K8sTools) -> Iterator[Session]:
    install_chart_rbac(cluster, k8s_tools / "helm", namespace, kinds=NAMESPACED_RBAC)
    yr.init(
        yr.Config(backend="kubernetes", namespace=namespace, kubeconfig=str(cluster.kubeconfig))
    )
    try:
        yield Session(cluster, namespace)
    finally:
        yr.finalize()


def in_bundle(group: str, index: int = -1, **options: Any) -> yr.InvokeOptions:
    return yr.InvokeOptions(
        **{**IN_GROUP, **options},
        resource_group_options=yr.ResourceGroupOptions(group, bundle_index=index),
    )


def admitted(s: Session, name: str, timeout: float = 60) -> dict:
    return wait_for(
        lambda: (st := s.group_status(name)).get("phase") == "Admitted" and st,
        timeout=timeout,
        what=f"group {name} Admitted (now {s.group_status(name)})",
    )


class HoldSampler:
    """Samples how many placeholders of each group are bound, until stopped."""

    def __init__(self, s: Session, groups: tuple[str, ...]) -> None:
        self.s, self.groups = s, groups
        self.samples: list[tuple[float, dict[str, int]]] = []
        self.messages: list[str] = []  # every status message the groups showed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HoldSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            counts = {g: self.s.bound_placeholders(g) for g in self.groups}
            self.samples.append((time.monotonic(), counts))
            for group in self.groups:
                message = self.s.group_status(group).get("message", "")
                if message and message not in self.messages:
                    self.messages.append(message)
            self._stop.wait(0.1)

    def longest_both_partial(self, total: int) -> float:
        """The longest stretch during which every group held some but not all bundles."""
        longest, since = 0.0, None
        for when, counts in self.samples:
            if all(0 < n < total for n in counts.values()):
                since = when if since is None else since
                longest = max(longest, when - since)
            else:
                since = None
        return longest


# --- admission ------------------------------------------------------------------------------


def run_team(name: str) -> list[int]:
    """The tutorial's pattern: reserve a team of three, run it, remove it."""
    group = yr.create_resource_group([ONE] * 3, name=name)
    group.wait(300)
    workers = [
        Worker.options(in_bundle(name, i, schedule_timeout_ms=300_000)).invoke() for i in range(3)
    ]
    pids = yr.get([w.pid.invoke() for w in workers], timeout=300)
    yr.remove_resource_group(group)
    return pids


def test_two_groups_that_cannot_both_fit_never_hold_partially_together_and_run_in_turn(
    session: Session,
):
    s = session
    with HoldSampler(s, ("left", "right")) as sampler, ThreadPoolExecutor(2) as teams:
        results = list(teams.map(run_team, ["left", "right"]))
    assert [len(set(pids)) for pids in results] == [3, 3]
    # Partial holds at once only while both are within their bind time, never for long.
    assert sampler.longest_both_partial(3) < BIND_S + 10
    # The one that waited released its partial reservations, saying what the scheduler said.
    released = [m for m in sampler.messages if "released" in m]
    assert released and all("Insufficient cpu" in m for m in released)


def test_an_instance_in_a_bundle_runs_on_the_placeholders_node_and_the_placeholder_is_gone(
    session: Session,
):
    s = session
    group = yr.create_resource_group([ONE, ONE], name="team", strategy="SPREAD")
    group.wait(60)
    nodes = {
        int(p.metadata.labels[c.BUNDLE_LABEL]): p.spec.node_name for p in s.placeholders("team")
    }
    worker = Worker.options(in_bundle("team", 1)).invoke()
    yr.get(worker.pid.invoke(), timeout=120)
    instance = s.instances()[worker.instance_id]
    (pod,) = s.pods(f"{c.INSTANCE_LABEL}={worker.instance_id}")
    assert pod.spec.node_name == nodes[1]
    assert instance["status"]["bundle"] == 1
    assert [int(p.metadata.labels[c.BUNDLE_LABEL]) for p in s.placeholders("team")] == [0]
    assert s.group_status("team")["bundles"][1]["instance"] == worker.instance_id
    # Bound by the operator, never through the scheduler: the capacity passed straight over.
    scheduled = s.core.list_namespaced_event(
        s.ns, field_selector=f"involvedObject.name={pod.metadata.name},reason=Scheduled"
    ).items
    assert scheduled == []


def test_any_bundle_index_gives_each_instance_a_free_bundle(session: Session):
    s = session
    yr.create_resource_group([ONE, ONE], name="pair").wait(60)
    workers = [Worker.options(in_bundle("pair", -1)).invoke() for _ in range(2)]
    yr.get([w.pid.invoke() for w in workers], timeout=120)
    bundles = sorted(s.instances()[w.instance_id]["status"]["bundle"] for w in workers)
    assert bundles == [0, 1]
    assert s.placeholders("pair") == []


def hog(name: str, node: str, cpu: str) -> dict:
    """A pod bound straight to ``node`` that holds ``cpu``."""
    container = {
        "name": "hog",
        "image": "ignored",
        "command": ["sleep", "600"],
        "resources": {"requests": {"cpu": cpu}},
    }
    return {
        "metadata": {"name": name},
        "spec": {"nodeName": node, "restartPolicy": "Never", "containers": [container]},
    }


def test_strict_spread_places_each_bundle_on_its_own_node(session: Session):
    s = session
    # Least-allocated scoring alone would put both half-CPU bundles on the emptier node-1.
    s.core.create_namespaced_pod(s.ns, hog("hog", "node-2", "1"))
    half = {"CPU": 500, "Memory": 128}
    yr.create_resource_group([half, half], name="apart", strategy="STRICT_SPREAD").wait(60)
    assert sorted(p.spec.node_name for p in s.placeholders("apart")) == ["node-1", "node-2"]
    with pytest.raises(yr.YRSchedulingError, match="needs 3 distinct nodes, the cluster has 2"):
        yr.create_resource_group([ONE] * 3, name="too-apart", strategy="STRICT_SPREAD")
    assert "too-apart" not in s.groups()


def test_strict_pack_places_every_bundle_on_one_node(session: Session):
    s = session
    yr.create_resource_group([ONE, ONE], name="together", strategy="STRICT_PACK").wait(60)
    # Least-allocated scoring alone would spread them over the two empty nodes.
    assert len({p.spec.node_name for p in s.placeholders("together")}) == 1


def test_an_unschedulable_group_says_the_schedulers_words_in_status_and_in_wait(session: Session):
    s = session
    hog = {"CPU": 1500, "Memory": 128}
    yr.create_resource_group([hog, hog], name="hogs", strategy="STRICT_SPREAD").wait(60)
    group = yr.create_resource_group([ONE, ONE], name="starved")
    with pytest.raises(RuntimeError, match="Insufficient cpu") as caught:
        group.wait(2 * BIND_S)
    assert "starved" in str(caught.value) and "Pending" in str(caught.value)
    status = s.group_status("starved")
    assert status["reason"] == "Unschedulable"
    assert status["message"].startswith("0/2 nodes are available: 2 Insufficient cpu.")


def test_kubectl_get_yrresourcegroups_shows_reserved_total_phase_and_reason(
    session: Session, k8s_tools: K8sTools, tmp_path
):
    yr.create_resource_group([ONE, ONE], name="shown").wait(60)
    table = subprocess.run(
        [str(k8s_tools / "kubectl"), "get", "yrresourcegroups", "-n", session.ns],
        # kubectl keeps its discovery cache under $HOME/.kube: a temporary home, not the repo
        env={
            "KUBECONFIG": str(session.cluster.kubeconfig),
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert table[:7] == ["NAME", "RESERVED", "TOTAL", "PHASE", "STRATEGY", "REASON", "AGE"]
    assert table[7:11] == ["shown", "2", "2", "Admitted"]


# --- bad input ------------------------------------------------------------------------------


def test_bad_placements_are_refused_before_any_yrinstance_exists(session: Session):
    yr.create_resource_group([ONE], name="small")
    with pytest.raises(ValueError, match="no resource group named 'nowhere'"):
        Worker.options(in_bundle("nowhere", 0)).invoke()
    with pytest.raises(ValueError, match="no bundle_index 3"):
        Worker.options(in_bundle("small", 3)).invoke()
    with pytest.raises(yr.YRSchedulingError, match="more than bundle 0 \\(1000m CPU, 128 MB\\)"):
        Worker.options(in_bundle("small", 0, cpu=1500)).invoke()
    assert session.instances() == {}


def test_a_group_larger_than_the_cluster_is_refused_at_once(session: Session):
    with pytest.raises(yr.YRSchedulingError, match="more than the cluster's 4000m CPU"):
        yr.create_resource_group([ONE] * 5, name="huge")
    assert session.groups() == {}


# --- a lost race ----------------------------------------------------------------------------


def test_a_bundle_whose_capacity_was_taken_meanwhile_is_reserved_again_and_then_used(
    session: Session,
):
    s = session
    yr.create_resource_group([ONE], name="raced").wait(60)
    (placeholder,) = s.placeholders("raced")
    node = placeholder.spec.node_name
    # Someone else takes the node's capacity in the instant the bundle passes to its instance:
    # the kubelet refuses the instance pod (OutOfcpu), and the group reserves the bundle again
    # through the scheduler, on the node that has room.
    s.core.delete_namespaced_pod(placeholder.metadata.name, s.ns, grace_period_seconds=0)
    wait_for(lambda: not s.placeholders("raced"), timeout=30, what="the placeholder gone")
    s.core.create_namespaced_pod(s.ns, hog("hog", node, "2"))
    worker = Worker.options(in_bundle("raced", 0)).invoke()
    yr.get(worker.pid.invoke(), timeout=120)
    (pod,) = s.pods(f"{c.INSTANCE_LABEL}={worker.instance_id}")
    assert pod.spec.node_name != node  # the hog still holds the first node
    assert s.group_status("raced")["bundles"][0] == {
        "node": pod.spec.node_name,
        "instance": worker.instance_id,
    }
    refused = s.core.list_namespaced_event(s.ns, field_selector="reason=OutOfcpu").items
    assert refused and refused[0].involved_object.name == pod.metadata.name


def test_a_bundle_passes_to_its_instance_only_while_no_other_group_waits_for_the_scheduler(
    session: Session,
):
    s = session
    yr.create_resource_group([ONE] * 3, name="holder").wait(60)
    yr.create_resource_group([ONE, ONE], name="waiter")  # one CPU is left: it cannot fit
    wait_for(
        lambda: any(not p.spec.node_name for p in s.placeholders("waiter")),
        timeout=60,
        what="a placeholder of the waiting group pending in the scheduler",
    )
    worker = Worker.options(in_bundle("holder", 0)).invoke()
    yr.get(worker.pid.invoke(), timeout=120)
    # Its bundle was never up for grabs: the kubelet refused nothing, the other group got none.
    assert s.core.list_namespaced_event(s.ns, field_selector="reason=OutOfcpu").items == []
    assert s.group_status("waiter")["phase"] == "Pending"
    assert s.group_status("holder")["bundles"][0]["instance"] == worker.instance_id


# --- removal --------------------------------------------------------------------------------


def test_removing_a_group_ends_its_instances_and_their_subtrees(session: Session):
    s = session
    group = yr.create_resource_group([ONE], name="doomed")
    lead = Lead.options(in_bundle("doomed", 0)).invoke(1)
    assert len(yr.get(lead.worker_names.invoke(), timeout=120)) == 1
    assert len(s.instances()) == 2  # the lead, in the group, and its worker from the free pool
    yr.remove_resource_group(group)
    wait_for(lambda: not s.instances(), timeout=60, what="the lead and its worker collected")
    wait_for(lambda: not s.pods(), timeout=60, what="every pod gone")
    assert s.groups() == {}


def test_deleting_the_yrresourcegroup_object_ends_its_instances(session: Session):
    s = session
    yr.create_resource_group([ONE], name="deleted").wait(60)
    worker = Worker.options(in_bundle("deleted", 0)).invoke()
    yr.get(worker.pid.invoke(), timeout=120)
    s.custom.delete_namespaced_custom_object(c.GROUP, c.VERSION, s.ns, c.GROUP_PLURAL, "deleted")
    status = wait_for(
        lambda: (
            (st := s.instances()[worker.instance_id].get("status", {})).get("phase") == "Failed"
            and st
        ),
        timeout=60,
        what="the instance ended by its group's deletion",
    )
    assert (status["reason"], status["message"]) == (
        "ResourceGroupRemoved",
        "resource group deleted was removed",
    )
    wait_for(lambda: not s.any_pods(), timeout=60, what="its pod and the placeholders gone")
    with pytest.raises(yr.YRError):
        yr.get(worker.pid.invoke(), timeout=60)


def test_deleting_the_groups_owner_removes_group_placeholders_and_instances(session: Session):
    s = session
    yr.create_resource_group([ONE, ONE], name="orphan").wait(60)
    worker = Worker.options(in_bundle("orphan", 0)).invoke()
    yr.get(worker.pid.invoke(), timeout=120)
    owner = s.groups()["orphan"]["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "Lease"
    s.coordination.delete_namespaced_lease(owner["name"], s.ns)
    wait_for(
        lambda: not s.groups() and not s.instances() and not s.pods(),
        timeout=60,
        what="group, instances and all pods collected with the Lease",
    )


def test_a_supervisor_reserves_its_team_from_its_pod_and_its_deletion_collects_the_group(
    session: Session,
):
    s = session
    lead = GroupLead.invoke(2)
    assert yr.get(lead.train.invoke(0.1), timeout=180) == ["shard 0 loss 1.0", "shard 1 loss 1.0"]
    name = yr.get(lead.group_name.invoke(), timeout=60)
    owner = s.groups()[name]["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "Pod"  # owned like the instances the supervisor creates
    lead.terminate()
    wait_for(
        lambda: not s.groups() and not s.instances() and not s.pods(),
        timeout=60,
        what="the supervisor's group, its workers and every pod collected",
    )


@pytest.fixture(scope="module")
def four_cpu_node(module_local_cluster: Callable[..., Any], k8s_tools: K8sTools) -> Iterator[Any]:
    """The issue's setting: one node of 4 CPUs, the operator as the chart's accounts.

    The second experiment's partial reservation holds back every takeover of the first's
    bundles until it is released: the short bind time keeps that wait to seconds."""
    with operated_cluster(
        module_local_cluster,
        k8s_tools / "helm",
        cpu="4",
        memory="8Gi",
        YR_RESOURCE_GROUP_BIND_SECONDS=str(BIND_S),
        YR_RESOURCE_GROUP_RETRY_SECONDS="0.5",
    ) as c:
        yield c


def test_the_groups_example_completes_both_experiments_on_a_4_cpu_node(
    four_cpu_node: Any, namespace: str, k8s_tools: K8sTools
):
    finished = run_example_on_cluster(
        four_cpu_node, k8s_tools / "helm", "tree_training_groups.py", namespace=namespace
    )
    assert finished.returncode == 0, finished.stderr
    assert "results: ['Loss: 10.0', 'Loss: 10.0']" in finished.stdout
    assert "results: ['Loss: 100.0', 'Loss: 100.0']" in finished.stdout


def test_the_unmodified_tutorial_reports_the_resource_deadlock_on_a_4_cpu_node(
    four_cpu_node: Any, namespace: str, k8s_tools: K8sTools
):
    finished = run_example_on_cluster(
        four_cpu_node,
        k8s_tools / "helm",
        "tree_training.py",
        namespace=namespace,
        YR_SCHEDULE_TIMEOUT_MS=SHORT_SCHEDULE_TIMEOUT_MS,  # the deadlock shows sooner than 30 s
    )
    assert finished.returncode != 0
    assert "YRSchedulingError" in finished.stderr
    assert "Insufficient cpu" in finished.stderr
