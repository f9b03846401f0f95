"""The node agent registers its Node, and stopping it leaves no process behind."""

from __future__ import annotations

import signal

import psutil
from kubernetes.client import CoreV1Api

from tests.cluster.fixtures import LocalCluster
from tests.cluster.testkit import pod_manifest, wait_pod
from tests.support import wait_for

NS = "default"


def _node_ready(core: CoreV1Api, name: str) -> str:
    conditions = core.read_node(name).status.conditions or []
    return next(c.status for c in conditions if c.type == "Ready")


def test_the_node_registers_its_capacity_and_readiness(local_cluster):
    cluster: LocalCluster = local_cluster(cpu="3", memory="5Gi", node_name="capable")

    with cluster.api_client() as client:
        node = CoreV1Api(client).read_node("capable")

    assert node.status.allocatable == {"cpu": "3", "memory": "5Gi", "pods": "110"}
    assert node.metadata.labels["kubernetes.io/hostname"] == "capable"
    assert _node_ready(CoreV1Api(cluster.api_client()), "capable") == "True"


def test_sigterm_to_the_node_agent_stops_every_pod_process_and_their_children(local_cluster):
    cluster: LocalCluster = local_cluster()
    agent = cluster.nodes["node-1"]
    with cluster.api_client() as client:
        core = CoreV1Api(client)
        # One plain pod, one whose shell leaves a background child, one ignoring SIGTERM.
        core.create_namespaced_pod(NS, pod_manifest("plain", ["sleep", "600"]))
        core.create_namespaced_pod(NS, pod_manifest("parent", ["sh", "-c", "sleep 600 & wait"]))
        core.create_namespaced_pod(
            NS, pod_manifest("stubborn", ["sh", "-c", "trap '' TERM; sleep 600"])
        )
        for name in ("plain", "parent", "stubborn"):
            wait_pod(core, NS, name, lambda p: p.status.phase == "Running", "Running")
        wait_for(
            lambda: len(psutil.Process(agent.pid).children(recursive=True)) >= 5,
            timeout=10,
            what="every pod process and child started",
        )
        started = psutil.Process(agent.pid).children(recursive=True)

        agent.send_signal(signal.SIGTERM)
        agent.wait(15)

        assert agent.returncode == 0
        assert [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
        assert _node_ready(core, "node-1") == "False"
