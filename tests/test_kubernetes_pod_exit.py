"""An instance pod ends by itself when it is deleted, even with a call still running in it:
nothing holds it until the kubelet's SIGKILL at the end of its termination grace period.

The real operator, pods as processes of the cluster emulation's node (SIGTERM, grace, SIGKILL,
then the final phase: Succeeded for exit code 0, Failed for a kill).
"""

from __future__ import annotations

from typing import Any

from kubernetes import client as k8s
from kubernetes import watch

import yr
from tests.k8s_instances import Worker
from tests.support import wait_for
from yr.contract import INSTANCE_LABEL

WATCH_TIMEOUT_S = 120  # the pod is gone well within this even when killed


def _final_phase(cluster: Any, namespace: str, instance_id: str) -> str:
    """Watch the instance's pod until it is deleted; the last phase it had."""
    core = k8s.CoreV1Api(cluster.api_client())
    phase = ""
    stream = watch.Watch()
    for event in stream.stream(
        core.list_namespaced_pod,
        namespace,
        label_selector=f"{INSTANCE_LABEL}={instance_id}",
        timeout_seconds=WATCH_TIMEOUT_S,
    ):
        phase = event["object"].status.phase or phase
        if event["type"] == "DELETED":
            stream.stop()
    return phase


def test_a_deleted_pod_with_a_call_still_running_exits_by_itself_not_killed(
    cluster, session, tmp_path
):
    # concurrency 2: its methods run in a thread pool, which Python joins at exit
    options = yr.InvokeOptions(cpu=100, memory=128, concurrency=2)
    worker = Worker.options(options).invoke()
    marker = tmp_path / "running"
    worker.sleep_marked.invoke(600, str(marker))  # pods are processes of this machine
    wait_for(marker.exists, timeout=120, what="the call to be running in the pod")
    worker.terminate()
    assert _final_phase(cluster, session, worker.instance_id) == "Succeeded"
