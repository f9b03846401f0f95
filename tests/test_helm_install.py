"""`helm install` of charts/yr into the emulated cluster, and the seed run through the chart's
own operator and gateway Deployments (their pods are processes running the container command)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from kubernetes.client import AppsV1Api, CoreV1Api, V1Pod

from tests.cluster.fixtures import REPO, LocalCluster
from tests.cluster.testkit import is_ready
from tests.cluster.tools import K8sTools
from tests.support import wait_for

NS = "yr-system"
CHART = REPO / "charts" / "yr"


def helm(tools: K8sTools, cluster: LocalCluster, *args: str) -> str:
    done = subprocess.run(
        [str(tools / "helm"), "--kubeconfig", str(cluster.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def cluster(module_local_cluster, k8s_tools: K8sTools) -> Iterator[LocalCluster]:
    cluster = module_local_cluster(cpu="8", memory="16Gi")
    helm(k8s_tools, cluster, "install", "yr", str(CHART), "--namespace", NS, "--create-namespace")
    yield cluster
    helm(k8s_tools, cluster, "uninstall", "yr", "--namespace", NS)


@pytest.fixture
def core(cluster: LocalCluster) -> Iterator[CoreV1Api]:
    with cluster.api_client() as client:
        yield CoreV1Api(client)


def component_pod(core: CoreV1Api, component: str, ready: bool) -> V1Pod:
    """The running (and, if asked, Ready) pod of the chart's `component` Deployment."""
    selector = f"app.kubernetes.io/component={component}"

    def found() -> V1Pod | None:
        for pod in core.list_namespaced_pod(NS, label_selector=selector).items:
            if pod.status.phase == "Running" and (is_ready(pod) or not ready):
                return pod
        return None

    return wait_for(found, timeout=60, what=f"the {component} pod to run")


def test_helm_install_reports_the_release_deployed(cluster: LocalCluster, k8s_tools: K8sTools):
    status = helm(k8s_tools, cluster, "status", "yr", "--namespace", NS)

    assert "STATUS: deployed" in status


def test_the_charts_deployments_get_their_pods_as_processes_from_the_container_command(
    cluster: LocalCluster, core: CoreV1Api
):
    operator = component_pod(core, "operator", ready=False)
    gateway = component_pod(core, "gateway", ready=True)

    assert operator.spec.service_account_name == "yr-operator"
    assert gateway.spec.service_account_name == "yr-gateway"
    owner = gateway.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.controller) == ("Deployment", "yr-gateway", True)
    with cluster.api_client() as client:
        deployment = AppsV1Api(client).read_namespaced_deployment("yr-gateway", NS)
    assert deployment.status.ready_replicas == 1


def test_the_seed_runs_through_the_charts_operator_and_gateway(
    cluster: LocalCluster, core: CoreV1Api
):
    component_pod(core, "operator", ready=False)
    gateway = component_pod(core, "gateway", ready=True)
    env = dict(
        os.environ,
        KUBECONFIG=str(cluster.kubeconfig),
        YR_BACKEND="kubernetes",
        YR_NAMESPACE=NS,
        YR_GATEWAY=f"{gateway.status.pod_ip}:50052",
    )

    finished = subprocess.run(
        [sys.executable, str(REPO / "examples" / "tree_training.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )

    assert finished.returncode == 0, finished.stderr
    assert "results: ['Loss: 10.0', 'Loss: 10.0']" in finished.stdout
    assert "results: ['Loss: 100.0', 'Loss: 100.0']" in finished.stdout


def test_helm_upgrade_keeps_the_gateway_certificate_drivers_pin(
    cluster: LocalCluster, core: CoreV1Api, k8s_tools: K8sTools
):
    before = core.read_namespaced_secret("yr-gateway-tls", NS).data

    helm(k8s_tools, cluster, "upgrade", "yr", str(CHART), "--namespace", NS)

    assert core.read_namespaced_secret("yr-gateway-tls", NS).data == before
