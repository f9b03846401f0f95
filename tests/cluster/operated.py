"""A cluster with the chart's RBAC and the real operator; per test a namespace.

A test module that asks for `cluster` gets the run's one such cluster, shared with the other
modules that ask for it (override the fixture to start one of the module's own, differently,
with `operated_cluster`); `instance_namespace` is a fresh namespace per test with the chart's
instance and gateway identities, and `session` a yr session in it (the fixture yields the
namespace):

    def test_something(cluster, session): ...

The operator runs cluster-wide as the chart's ServiceAccount from its own namespace, so tests
share nothing but the cluster and the operator.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

import yr
from tests.cluster.chart_rbac import NAMESPACED_RBAC, install_chart_rbac
from tests.cluster.faults import FaultClient
from tests.cluster.fixtures import REPO, LocalCluster
from tests.cluster.operator_process import OperatorProcess, operator_env
from tests.cluster.tools import K8sTools
from tests.support import wait_for
from yr.contract import GROUP, PLURAL, VERSION

CRDS = sorted((REPO / "crds").glob("*.yaml"))  # every kind the chart installs
OPERATOR_NAMESPACE = "yr-system"
COLLECT_TIMEOUT = 60.0  # a finalized session's YRInstances are gone within this
# YR_LEASE_GRACE_SECONDS of the run's shared operator: a killed driver's tree goes this long
# after its Lease expires (the default 10 s is for real API servers and clock skew).
SHARED_LEASE_GRACE_S = "3"


@contextlib.contextmanager
def operated_cluster(
    start: Callable[..., LocalCluster],
    helm: Path,
    *operator_args: str,
    cpu: str = "8",
    memory: str = "16Gi",
    **operator_env_vars: str,
) -> Iterator[LocalCluster]:
    """Start a cluster with the chart's CRDs and the operator (`-A` unless `operator_args`).

    The cluster gets `.operator` (the OperatorProcess) and `.env` (a driver's environment:
    this tree's code and the admin kubeconfig)."""
    cluster = start(cpu=cpu, memory=memory, crds=CRDS)
    install_chart_rbac(cluster, helm, OPERATOR_NAMESPACE)
    operator_env_vars.setdefault("YR_RESTART_BACKOFF_SECONDS", "0.2")
    operator = OperatorProcess(
        cluster.kubeconfig_for(OPERATOR_NAMESPACE, "yr-operator"),
        cluster.workdir / "operator.log",
        *operator_args,
        **operator_env_vars,
    ).start()
    cluster.operator = operator
    cluster.env = operator_env(cluster.kubeconfig)
    try:
        yield cluster
    finally:
        operator.stop()


@pytest.fixture(scope="session")
def cluster(
    session_local_cluster: Callable[..., LocalCluster], k8s_tools: K8sTools
) -> Iterator[LocalCluster]:
    """An operated cluster (8 CPUs, 16Gi), one for every module that does not start its own:
    they share nothing in it but the operator, each test working in a namespace of its own.
    The operator serves its metrics (the URL is in `cluster.operator.log`)."""
    with operated_cluster(
        session_local_cluster,
        k8s_tools / "helm",
        "-A",
        "--metrics",
        "127.0.0.1:0",
        YR_LEASE_GRACE_SECONDS=SHARED_LEASE_GRACE_S,
    ) as cluster:
        yield cluster


@pytest.fixture
def instance_namespace(cluster: LocalCluster, namespace: str, k8s_tools: K8sTools) -> str:
    """This test's namespace with the chart's instance and gateway ServiceAccounts and Roles."""
    install_chart_rbac(cluster, k8s_tools / "helm", namespace, kinds=NAMESPACED_RBAC)
    return namespace


@pytest.fixture
def session(cluster: LocalCluster, instance_namespace: str) -> Iterator[str]:
    """A yr session on the module's cluster in this test's namespace; yields the namespace."""
    with kubernetes_session(cluster, instance_namespace):
        yield instance_namespace


@pytest.fixture
def faults(cluster: LocalCluster) -> Iterator[FaultClient]:
    """The cluster's API server fault rules (tests/cluster/faults.py), cleared after the test."""
    client = FaultClient(cluster.base_url, kubeconfig=cluster.kubeconfig)
    try:
        yield client
    finally:
        client.clear()


def yrinstances(cluster: LocalCluster, namespace: str) -> list[dict[str, Any]]:
    with cluster.api_client() as client:
        custom = k8s.CustomObjectsApi(client)
        return custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]


def wait_until_yrinstance_gone(
    cluster: LocalCluster, namespace: str, name: str, *, what: str, timeout: float = 60
) -> None:
    """Until no YRInstance named ``name`` is left in ``namespace`` (the operator deleted it)."""
    wait_for(
        lambda: name not in {i["metadata"]["name"] for i in yrinstances(cluster, namespace)},
        timeout=timeout,
        what=what,
    )


@contextlib.contextmanager
def kubernetes_session(
    cluster: LocalCluster, namespace: str, **config: Any
) -> Iterator[LocalCluster]:
    """`yr.init` on the cluster in `namespace`; at the end `yr.finalize()` and wait until the
    session's YRInstances are collected."""
    yr.init(
        yr.Config(
            backend="kubernetes", namespace=namespace, kubeconfig=str(cluster.kubeconfig), **config
        )
    )
    try:
        yield cluster
    finally:
        yr.finalize()
        wait_for(
            lambda: not yrinstances(cluster, namespace),
            timeout=COLLECT_TIMEOUT,
            what="the session's YRInstances to be collected",
        )
