"""An instance's payload Secret lives as long as its YRInstance and its pods, not a moment less.

Owned by the YRInstance alone, the garbage collector deleted it together with the pod, while
the kubelet still ran (and remounted) the terminating pod: FailedMount Warnings at teardown.
"""

from __future__ import annotations

import os
import signal

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

import yr
from tests.compat_instances import Tidy
from tests.k8s_instances import Worker
from tests.support import wait_for
from yr.contract import GROUP, PLURAL, VERSION, payload_secret_name, pod_name

SMALL = yr.InvokeOptions(cpu=100, memory=64)


def _payload_owners(cluster, namespace: str, instance: str) -> set[str] | None:
    """The uids owning the instance's payload Secret; None once the Secret is gone."""
    core = k8s.CoreV1Api(cluster.api_client())
    try:
        secret = core.read_namespaced_secret(payload_secret_name(instance), namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return {ref.uid for ref in secret.metadata.owner_references or []}


def _pod_uid(cluster, namespace: str, name: str) -> str | None:
    try:
        return k8s.CoreV1Api(cluster.api_client()).read_namespaced_pod(name, namespace).metadata.uid
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def _yrinstance(cluster, namespace: str, name: str) -> dict:
    custom = k8s.CustomObjectsApi(cluster.api_client())
    return custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def test_a_deleted_instances_payload_secret_outlives_its_terminating_pod(
    cluster, session, tmp_path
):
    # The shutdown hook keeps the pod terminating for a few seconds after the delete.
    options = SMALL.merged(custom_extensions={"GRACEFUL_SHUTDOWN_TIME": "20"})
    tidy = Tidy.options(options).invoke(str(tmp_path / "hook-ran"), 3.0)
    yr.get(tidy.pid.invoke(), timeout=120)
    pod = pod_name(tidy.instance_id, 0)
    pod_uid = _pod_uid(cluster, session, pod)
    wait_for(
        lambda: pod_uid in (_payload_owners(cluster, session, tidy.instance_id) or ()),
        timeout=30,
        what="the running pod to hold its payload Secret",
    )

    k8s.CustomObjectsApi(cluster.api_client()).delete_namespaced_custom_object(
        GROUP, VERSION, session, PLURAL, tidy.instance_id
    )

    def pod_gone() -> bool:
        secret_there = _payload_owners(cluster, session, tidy.instance_id) is not None
        pod_there = _pod_uid(cluster, session, pod) is not None  # read after the Secret
        assert secret_there or not pod_there, "the payload Secret went before its pod"
        return not pod_there

    wait_for(pod_gone, timeout=60, what="the terminating pod to go")
    assert (tmp_path / "hook-ran").exists()  # it did terminate gracefully, with its Secret
    wait_for(
        lambda: _payload_owners(cluster, session, tidy.instance_id) is None,
        timeout=30,
        what="the payload Secret to be collected after its pod",
    )


def test_a_restarted_instance_keeps_its_payload_held_by_the_new_pod(cluster, session):
    worker = Worker.options(SMALL.merged(recover_retry_times=1)).invoke()
    pid = yr.get(worker.pid.invoke(), timeout=120)
    os.kill(pid, signal.SIGKILL)
    # The next incarnation starts from the same payload Secret.
    wait_for(
        lambda: (
            (_yrinstance(cluster, session, worker.instance_id).get("status") or {}).get("restarts")
            == 1
        ),
        timeout=60,
        what="the instance to restart",
    )
    assert yr.get(worker.pid.invoke(), timeout=120) != pid
    owners = {
        _yrinstance(cluster, session, worker.instance_id)["metadata"]["uid"],
        _pod_uid(cluster, session, pod_name(worker.instance_id, 1)),
    }
    # The dead pod's reference is dropped by the garbage collector as dangling.
    wait_for(
        lambda: _payload_owners(cluster, session, worker.instance_id) == owners,
        timeout=30,
        what="the payload Secret to be owned by its YRInstance and the new pod",
    )
