"""The `yr` command against the cluster emulation with the operator: the same facts as locally,
a dead pod's last lines after the pod is gone, the root label, and the operator's metrics.
The cluster is the run's shared one (tests/cluster/operated.py), its operator serving metrics."""

from __future__ import annotations

import re
import subprocess
import urllib.request

import pytest
from kubernetes import client as k8s

import yr
from tests.cluster.chart_rbac import NAMESPACED_RBAC, install_chart_rbac
from tests.cluster.fixtures import fresh_namespace
from tests.cluster.operated import kubernetes_session
from tests.cluster.tools import K8sTools
from tests.observe_instances import Leaf, Top
from tests.support import wait_for
from tests.yr_cli_support import OBSERVED_FACTS, flatten, observed_facts, run_yr, yr_json

GROUP, VERSION, PLURAL = "yr.dev", "v1alpha1", "yrinstances"


@pytest.fixture(scope="module")
def tree_namespace(cluster, k8s_tools: K8sTools):
    """The module's namespace: one observed tree, read by every test of the module."""
    with fresh_namespace(cluster) as name:
        install_chart_rbac(cluster, k8s_tools / "helm", name, kinds=NAMESPACED_RBAC)
        cluster.tree_namespace = name  # where kube_yr and the tests look
        try:
            yield name
        finally:
            del cluster.tree_namespace  # the shared cluster outlives this module


@pytest.fixture(scope="module")
def observed(cluster, tree_namespace):
    """The observed tree of tests/observe_instances.py, once, in the module's namespace."""
    with kubernetes_session(cluster, tree_namespace):
        top = Top.invoke()
        ids = yr.get(top.ids.invoke(), timeout=120)
        yr.get(top.kill_doomed.invoke(), timeout=120)
        yr.get(top.start_blocking.invoke(), timeout=120)
        yield {"top": top.instance_id, **ids}


def kube_yr(cluster, *args: str) -> subprocess.CompletedProcess:
    return run_yr(
        "--kubernetes", "-n", cluster.tree_namespace, *args, KUBECONFIG=str(cluster.kubeconfig)
    )


def kube_rows(cluster) -> list[dict]:
    return yr_json(
        "--kubernetes", "-n", cluster.tree_namespace, "list", KUBECONFIG=str(cluster.kubeconfig)
    )["instances"]


def _dead_pod_gone(cluster, observed) -> bool:
    pods = k8s.CoreV1Api(cluster.api_client()).list_namespaced_pod(cluster.tree_namespace).items
    return all(not pod.metadata.name.startswith(observed["doomed"]) for pod in pods)


def test_yr_list_on_kubernetes_shows_the_same_facts_as_locally(cluster, observed):
    def settled():
        facts = observed_facts(kube_rows(cluster), observed)
        return facts if facts == OBSERVED_FACTS else None

    wait_for(settled, timeout=60, what="the operator's status of the observed tree")


def test_yr_tree_json_on_kubernetes_nests_the_tree_three_deep(cluster, observed):
    sessions = yr_json(
        "--kubernetes", "-n", cluster.tree_namespace, "tree", KUBECONFIG=str(cluster.kubeconfig)
    )
    (session,) = sessions["sessions"]
    nodes = flatten(session["tree"])
    assert nodes[observed["top"]]["depth"] == 1
    assert nodes[observed["middle"]]["depth"] == 2
    assert nodes[observed["leaf"]]["depth"] == 3


def test_yr_tree_on_kubernetes_shows_the_middle_waiting_on_the_leaf(cluster, observed):
    def middle_waits():
        sessions = yr_json(
            "--kubernetes", "-n", cluster.tree_namespace, "tree", KUBECONFIG=str(cluster.kubeconfig)
        )["sessions"]
        return flatten(sessions[0]["tree"])[observed["middle"]].get("waiting_on") or None

    (wait,) = wait_for(middle_waits, timeout=60, what="the middle pod to wait on the leaf")
    assert (wait["target"], wait["method"]) == (observed["leaf"], "block")


def test_yr_logs_shows_a_dead_pods_last_lines_after_the_pod_is_gone(cluster, observed):
    wait_for(lambda: _dead_pod_gone(cluster, observed), timeout=60, what="the dead pod to go")
    done = kube_yr(cluster, "logs", observed["doomed"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-2:] == ["last words 29", "exiting with code 3"]


def test_kubectl_describe_shows_a_dead_pods_last_lines(cluster, observed, k8s_tools):
    wait_for(lambda: _dead_pod_gone(cluster, observed), timeout=60, what="the dead pod to go")
    described = subprocess.run(
        [
            str(k8s_tools / "kubectl"),
            "--kubeconfig",
            str(cluster.kubeconfig),
            "describe",
            "yri",
            observed["doomed"],
            "-n",
            cluster.tree_namespace,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    # status.lastTermination.output (the message may quote the kubelet's termination message)
    assert "last words 29" in described[described.index("Output:") :]


def test_the_dead_pods_output_keeps_only_the_last_twenty_lines(cluster, observed):
    custom = k8s.CustomObjectsApi(cluster.api_client())
    doomed = custom.get_namespaced_custom_object(
        GROUP, VERSION, cluster.tree_namespace, PLURAL, observed["doomed"]
    )
    output = doomed["status"]["lastTermination"]["output"]
    assert len(output.splitlines()) == 20
    assert "last words 10" not in output


def test_every_instance_of_a_tree_carries_its_roots_label(cluster, observed):
    custom = k8s.CustomObjectsApi(cluster.api_client())
    selected = custom.list_namespaced_custom_object(
        GROUP,
        VERSION,
        cluster.tree_namespace,
        PLURAL,
        label_selector=f"yr.dev/root={observed['top']}",
    )["items"]
    assert {item["metadata"]["name"] for item in selected} == set(observed.values())


def test_yr_stack_on_kubernetes_shows_the_sleep_frame_of_user_code(cluster, observed):
    leaf = Leaf.invoke()
    leaf.doze.invoke()

    def dozing_stack() -> str | None:
        done = kube_yr(cluster, "stack", leaf.instance_id)
        return done.stdout if "in doze" in done.stdout else None

    stack = wait_for(dozing_stack, timeout=90, what="the leaf pod's stack to show doze")
    assert "time.sleep(600)" in stack[stack.index("in doze") :]
    leaf.terminate()


def _metrics_url(cluster) -> str:
    def logged() -> str | None:
        found = re.search(r"metrics on (http://\S+/metrics)", cluster.operator.log.read_text())
        return found.group(1) if found else None

    return wait_for(logged, timeout=30, what="the operator to serve its metrics")


def test_the_operator_metrics_endpoint_serves_the_listed_series(cluster, observed):
    wait_for(lambda: _dead_pod_gone(cluster, observed), timeout=60, what="the dead pod to go")
    with urllib.request.urlopen(_metrics_url(cluster), timeout=10) as response:
        text = response.read().decode()
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert samples['yr_operator_reconciles_total{outcome="ok"}'] >= 4
    assert samples["yr_operator_reconcile_duration_seconds_count"] >= 4
    assert samples['yr_operator_instances{phase="Ready"}'] >= 3
    assert samples['yr_operator_instances{phase="Failed"}'] >= 1
    assert samples["yr_operator_time_to_ready_seconds_count"] >= 3
    assert "yr_operator_instance_restarts_total" in samples
    assert "# TYPE yr_operator_pod_create_failures_total counter" in text
