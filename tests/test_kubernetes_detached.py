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
from tests.cluster.operated import kubernetes_session, wait_until_yrinstance_gone, yrinstances
from tests.k8s_instances import Tally
from tests.support import wait_for
from yr.contract import GROUP, PLURAL, VERSION

REPO = pathlib.Path(__file__).parents[1]
DEADLINE_S = 180
DETACHED = yr.InvokeOptions(cpu=100, memory=128, lifetime="detached")

# A whole driver in its own process: it makes a detached instance, leaves state in it, ends.
CREATOR = """
import sys
import yr
from tests.k8s_instances import Tally

yr.init(yr.Config(backend="kubernetes", namespace=sys.argv[3], kubeconfig=sys.argv[1]))
options = yr.InvokeOptions(cpu=100, memory=128, name=sys.argv[2])
options.custom_extensions["lifecycle"] = "detached"  # openYuanrong's spelling
print(yr.get(Tally.options(options).invoke().add.invoke(5), timeout=120))
yr.finalize()
"""


def _secrets_of(cluster, namespace: str, session: str) -> list[str]:
    with cluster.api_client() as client:
        found = k8s.CoreV1Api(client).list_namespaced_secret(
            namespace, label_selector=f"yr.dev/session={session}"
        )
    return [s.metadata.name for s in found.items]


def _delete_detached(cluster, namespace: str) -> None:
    with cluster.api_client() as client:
        custom = k8s.CustomObjectsApi(client)
        for item in yrinstances(cluster, namespace):
            if item["metadata"].get("labels", {}).get("yr.dev/detached") == "true":
                custom.delete_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, item["metadata"]["name"]
                )


@pytest.fixture
def session(cluster, instance_namespace: str):
    """A driver session in this test's namespace; the detached instances a test left are
    deleted afterwards, so the session's end can wait for every YRInstance to go."""
    with kubernetes_session(cluster, instance_namespace):
        try:
            yield instance_namespace
        finally:
            _delete_detached(cluster, instance_namespace)


def _init(cluster, namespace: str) -> None:
    yr.init(
        yr.Config(backend="kubernetes", namespace=namespace, kubeconfig=str(cluster.kubeconfig))
    )


def _run_creator(cluster, namespace: str, name: str) -> str:
    """Run the CREATOR driver to its end; its output (the instance's total) is returned."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "operator")])}
    done = subprocess.run(
        [sys.executable, "-c", CREATOR, str(cluster.kubeconfig), name, namespace],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,  # run() kills the driver if it overruns
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_detached_instance_outlives_its_driver_and_a_later_driver_calls_it_by_name(
    cluster, instance_namespace
):
    ns = instance_namespace
    assert _run_creator(cluster, ns, "tally").strip().splitlines()[-1] == "5"
    (detached,) = yrinstances(cluster, ns)  # the creator's Lease is gone; its instance is not
    assert "ownerReferences" not in detached["metadata"]
    _init(cluster, ns)
    try:
        tally = yr.get_instance("tally", timeout=30)
        assert yr.get(tally.add.invoke(2), timeout=DEADLINE_S) == 7  # the same instance
        yr.kill_instance(tally)
        wait_for(lambda: not yrinstances(cluster, ns), timeout=60, what="the killed instance")
    finally:
        yr.finalize()


def test_finalize_leaves_a_detached_instance_running(cluster, session):
    tally = Tally.options(DETACHED.merged(name="stays")).invoke()
    yr.get(tally.add.invoke(1), timeout=DEADLINE_S)
    yr.finalize()
    _init(cluster, session)
    again = yr.get_instance("stays", timeout=30)
    assert yr.get(again.add.invoke(1), timeout=DEADLINE_S) == 2
    again.terminate()


def test_a_detached_instance_outlives_the_instance_that_created_it(cluster, session):
    creator = Tally.invoke()
    assert yr.get(creator.start_detached.invoke("orphan"), timeout=DEADLINE_S) == 3
    creator.terminate()
    wait_until_yrinstance_gone(
        cluster, session, creator.instance_id, what="the creator's YRInstance to go"
    )
    orphan = yr.get_instance("orphan", timeout=30)
    assert yr.get(orphan.add.invoke(1), timeout=DEADLINE_S) == 4


def test_a_detached_instance_needs_a_name_and_nothing_is_created_without_one(cluster, session):
    with pytest.raises(ValueError, match="a detached instance needs a name"):
        Tally.options(DETACHED).invoke()
    assert not yrinstances(cluster, session)


def test_killing_a_detached_instance_ends_its_subtree_and_its_session_secret(cluster, session):
    tally = Tally.options(DETACHED.merged(name="parent")).invoke()
    yr.get(tally.start_child.invoke(), timeout=DEADLINE_S)
    detached_session = {i["spec"]["session"] for i in yrinstances(cluster, session)}
    assert len(yrinstances(cluster, session)) == 2 and len(detached_session) == 1
    (own_session,) = detached_session
    assert _secrets_of(cluster, session, own_session)
    yr.kill_instance(tally)
    wait_for(
        lambda: not yrinstances(cluster, session), timeout=60, what="the instance and its child"
    )
    wait_for(
        lambda: not _secrets_of(cluster, session, own_session),
        timeout=60,
        what="the detached session's Secrets",
    )


def test_an_instance_pod_may_not_read_a_detached_instances_credentials(cluster, session):
    Tally.options(DETACHED.merged(name="private")).invoke()
    looker = Tally.invoke()
    with pytest.raises(yr.YRError, match="may not read"):
        yr.get(looker.find.invoke("private"), timeout=DEADLINE_S)
