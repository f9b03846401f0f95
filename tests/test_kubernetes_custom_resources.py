"""Custom resources through the operator: the pod's limits, and Unschedulable when none has it."""

from __future__ import annotations

import pytest
from kubernetes import client as k8s

import yr
from tests.cluster.operated import yrinstances
from tests.k8s_instances import Worker
from tests.support import wait_for

GPU = "example.com/gpu"
MESSAGE = f"0/1 nodes are available: 1 Insufficient {GPU}."


def test_an_unsatisfiable_custom_resource_is_unschedulable_in_status_and_error(cluster, session):
    options = yr.InvokeOptions(
        cpu=100, memory=128, custom_resources={GPU: 1}, schedule_timeout_ms=3000
    )
    worker = Worker.options(options).invoke()
    with pytest.raises(yr.YRSchedulingError, match=f"Insufficient {GPU}") as caught:
        yr.get(worker.pid.invoke(), timeout=120)
    assert MESSAGE in str(caught.value)
    (instance,) = yrinstances(cluster, session)
    assert instance["spec"]["customResources"] == [{"name": GPU, "quantity": 1}]
    # The real scheduler's message goes on (a preemption clause): assert its Kubernetes part.
    status = instance["status"]
    assert (status["reason"], status["message"].split(" preemption:")[0]) == (
        "Unschedulable",
        MESSAGE,
    )
    core = k8s.CoreV1Api(cluster.api_client())
    pod = wait_for(lambda: core.list_namespaced_pod(session).items, timeout=30, what="the pod")[0]
    container = pod.spec.containers[0]
    assert container.resources.limits == {GPU: "1"}
    assert container.resources.requests[GPU] == "1"
