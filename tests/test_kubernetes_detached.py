"""Detached instances on the emulated cluster: owned by nothing but their namespace, they
outlive the driver that made them, a later driver finds them by name, and only a kill ends them."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
from kubernetes import client as k8s

import yr
from tests.cluster.chart_rbac import install_chart_rbac
from tests.cluster.operator_process import OperatorProcess, operator_env
from tests.cluster.tools import K8sTools
from tests.k8s_instances import Tally
from tests.support import wait_for

REPO = pathlib.Path(__file__).parents[1]
CRD = REPO / "crds" / "yrinstances.yaml"
GROUP, VERSION, PLURAL = "yr.dev", "v1alpha1", "yrinstances"
DEADLINE_S = 180
DETACHED = yr.InvokeOptions(cpu=100, memory=128, lifetime="detached")

# A whole driver in its own process: it makes a detached instance, leaves state in it, ends.
CREATOR = """
import sys
import yr
from tests.k8s_instances import Tally

yr.init(yr.Config(backend="kubernetes", namespace="default", kubeconfig=sys.argv[1]))
options = yr.InvokeOptions(cpu=100, memory=128, name=sys.argv[2])
options.custom_extensions["lifecycle"] = "detached"  # openYuanrong's spelling
print(yr.get(Tally.options(options).invoke().add.invoke(5), timeout=120))
yr.finalize()
"""


@pytest.fixture(scope="module")
def cluster(module_local_cluster, k8s_tools: K8sTools):
    cluster = module_local_cluster(cpu="8", memory="16Gi", crds=[CRD])
    install_chart_rbac(cluster, k8s_tools / "helm", "default")
    operator = OperatorProcess(
        cluster.kubeconfig_for("default", "yr-operator"), cluster.workdir / "operator.log"
    ).start()
    cluster.env = operator_env(cluster.kubeconfig)
    try:
        yield cluster
    finally:
        operator.stop()


def _yrinstances(cluster) -> list[dict]:
    custom = k8s.CustomObjectsApi(cluster.api_client())
    return custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)["items"]


def _secrets_of(cluster, session: str) -> list[str]:
    core = k8s.CoreV1Api(cluster.api_client())
    found = core.list_namespaced_secret("default", label_selector=f"yr.dev/session={session}")
    return [s.metadata.name for s in found.items]


@pytest.fixture
def session(cluster):
    """A driver session; whatever detached instance a test left is deleted afterwards."""
    yr.init(
        yr.Config(backend="kubernetes", namespace="default", kubeconfig=str(cluster.kubeconfig))
    )
    try:
        yield cluster
    finally:
        yr.finalize()
        custom = k8s.CustomObjectsApi(cluster.api_client())
        for item in _yrinstances(cluster):
            if item["metadata"].get("labels", {}).get("yr.dev/detached") == "true":
                custom.delete_namespaced_custom_object(
                    GROUP, VERSION, "default", PLURAL, item["metadata"]["name"]
                )
        wait_for(
            lambda: not _yrinstances(cluster),
            timeout=60,
            what="every YRInstance to be collected",
        )


def _run_creator(cluster, name: str) -> str:
    """Run the CREATOR driver to its end; its output (the instance's total) is returned."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "operator")])}
    done = subprocess.run(
        [sys.executable, "-c", CREATOR, str(cluster.kubeconfig), name],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,  # run() kills the driver if it overruns
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_detached_instance_outlives_its_driver_and_a_later_driver_calls_it_by_name(cluster):
    assert _run_creator(cluster, "tally").strip().splitlines()[-1] == "5"
    (detached,) = _yrinstances(cluster)  # the creator's Lease is gone; its instance is not
    assert "ownerReferences" not in detached["metadata"]
    yr.init(
        yr.Config(backend="kubernetes", namespace="default", kubeconfig=str(cluster.kubeconfig))
    )
    try:
        tally = yr.get_instance("tally", timeout=30)
        assert yr.get(tally.add.invoke(2), timeout=DEADLINE_S) == 7  # the same instance
        yr.kill_instance(tally)
        wait_for(lambda: not _yrinstances(cluster), timeout=60, what="the killed instance")
    finally:
        yr.finalize()


def test_finalize_leaves_a_detached_instance_running(session):
    tally = Tally.options(DETACHED.merged(name="stays")).invoke()
    yr.get(tally.add.invoke(1), timeout=DEADLINE_S)
    yr.finalize()
    yr.init(
        yr.Config(backend="kubernetes", namespace="default", kubeconfig=str(session.kubeconfig))
    )
    again = yr.get_instance("stays", timeout=30)
    assert yr.get(again.add.invoke(1), timeout=DEADLINE_S) == 2
    again.terminate()


def test_a_detached_instance_outlives_the_instance_that_created_it(session):
    creator = Tally.invoke()
    assert yr.get(creator.start_detached.invoke("orphan"), timeout=DEADLINE_S) == 3
    creator.terminate()
    wait_for(
        lambda: creator.instance_id not in {i["metadata"]["name"] for i in _yrinstances(session)},
        timeout=60,
        what="the creator's YRInstance to go",
    )
    orphan = yr.get_instance("orphan", timeout=30)
    assert yr.get(orphan.add.invoke(1), timeout=DEADLINE_S) == 4


def test_a_detached_instance_needs_a_name_and_nothing_is_created_without_one(session):
    with pytest.raises(ValueError, match="a detached instance needs a name"):
        Tally.options(DETACHED).invoke()
    assert not _yrinstances(session)


def test_killing_a_detached_instance_ends_its_subtree_and_its_session_secret(session):
    tally = Tally.options(DETACHED.merged(name="parent")).invoke()
    yr.get(tally.start_child.invoke(), timeout=DEADLINE_S)
    detached_session = {i["spec"]["session"] for i in _yrinstances(session)}
    assert len(_yrinstances(session)) == 2 and len(detached_session) == 1
    (own_session,) = detached_session
    assert _secrets_of(session, own_session)
    yr.kill_instance(tally)
    wait_for(lambda: not _yrinstances(session), timeout=60, what="the instance and its child")
    wait_for(
        lambda: not _secrets_of(session, own_session),
        timeout=60,
        what="the detached session's Secrets",
    )


def test_an_instance_pod_may_not_read_a_detached_instances_credentials(session):
    Tally.options(DETACHED.merged(name="private")).invoke()
    looker = Tally.invoke()
    with pytest.raises(yr.YRError, match="may not read"):
        yr.get(looker.find.invoke("private"), timeout=DEADLINE_S)
