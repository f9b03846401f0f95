"""The SDK's and the operator's error paths under API faults: 429, 500, a dropped watch, 410.

The faults come from the emulated API server (tests/cluster/faults.py); the SDK, the real kopf
operator and the pods are the real ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s

import yr
from tests.cluster.faults import FaultClient
from tests.cluster.operated import kubernetes_session
from tests.k8s_instances import Worker
from tests.support import wait_for

GROUP, VERSION, PLURAL = "yr.dev", "v1alpha1", "yrinstances"
SMALL = yr.InvokeOptions(cpu=100, memory=64)


def _pod_create(namespace: str) -> str:
    return rf"^/api/v1/namespaces/{namespace}/pods$"


def _session_watch() -> str:
    """What only this session's watches ask for (kopf's watches have no selector)."""
    return f"labelSelector=yr.dev/session={yr.session.current().runtime._session}"


@pytest.fixture
def session(cluster: Any, instance_namespace: str, faults: FaultClient) -> Iterator[str]:
    with kubernetes_session(cluster, instance_namespace):
        try:
            yield instance_namespace
        finally:
            faults.clear()  # before the session's teardown requests


def _gap(hits: list[dict[str, Any]]) -> float:
    """Seconds between the faulted request and the next one of the same rule."""
    assert [h["faulted"] for h in hits[:2]] == [True, False], hits
    return hits[1]["time"] - hits[0]["time"]


def test_the_sdk_waits_out_a_429_for_its_retry_after(session: str, faults: FaultClient) -> None:
    instance_create = rf"^/apis/yr.dev/v1alpha1/namespaces/{session}/yrinstances$"
    rule = faults.add(method="POST", path=instance_create, status=429, retry_after=2)
    worker = Worker.options(SMALL).invoke()
    assert yr.get(worker.pid.invoke(), timeout=60) > 0
    assert _gap(faults.hits(rule)) >= 2.0


def test_the_sdk_retries_a_500_so_no_instance_is_left_without_its_payload(
    session: str, faults: FaultClient
) -> None:
    faults.add(method="POST", path=rf"/namespaces/{session}/secrets$", status=500)
    worker = Worker.options(SMALL).invoke()
    assert yr.get(worker.pid.invoke(), timeout=60) > 0


def test_the_operator_waits_out_a_429_for_its_retry_after(
    session: str, faults: FaultClient
) -> None:
    rule = faults.add(method="POST", path=_pod_create(session), status=429, retry_after=3)
    worker = Worker.options(SMALL).invoke()
    assert yr.get(worker.pid.invoke(), timeout=60) > 0
    assert _gap(faults.hits(rule)) >= 3.0


def test_the_operator_retries_a_500_instead_of_reporting_failed_create(
    cluster: Any, session: str, faults: FaultClient
) -> None:
    rule = faults.add(method="POST", path=_pod_create(session), status=500)
    worker = Worker.options(SMALL).invoke()
    assert yr.get(worker.pid.invoke(), timeout=60) > 0
    assert [h["faulted"] for h in faults.hits(rule)] == [True, False]
    with cluster.api_client() as client:
        events = k8s.CoreV1Api(client).list_namespaced_event(session).items
    assert not [
        e
        for e in events
        if e.involved_object.name == worker.instance_id and e.reason == "FailedCreate"
    ]


def test_a_refused_pod_reaches_the_driver_as_failed_create(
    session: str, faults: FaultClient
) -> None:
    refusal = f'pods "x" is forbidden: error looking up service account {session}/yr-instance'
    faults.add(method="POST", path=_pod_create(session), status=403, message=refusal, times=-1)
    worker = Worker.options(yr.InvokeOptions(cpu=100, memory=64, schedule_timeout_ms=4000))
    with pytest.raises(yr.YRSchedulingError) as caught:
        yr.get(worker.invoke().pid.invoke(), timeout=60)
    assert "could not create its pod" in str(caught.value) and refusal in str(caught.value)
    assert "cpu" not in str(caught.value)


def test_the_sdk_watch_resumes_after_it_is_dropped(session: str, faults: FaultClient) -> None:
    first = Worker.options(SMALL).invoke()
    yr.get(first.pid.invoke(), timeout=60)
    query = _session_watch()
    # Between two of its watches there is nothing to cut: try until one was open.
    wait_for(lambda: faults.drop_watches(path=PLURAL, query=query), timeout=30, what="a watch")
    second = Worker.options(SMALL).invoke()  # only the watch tells the SDK it is Ready
    assert yr.get(second.pid.invoke(), timeout=60) > 0


def test_an_instance_deleted_while_the_watch_was_gone_fails_its_waiters(
    cluster: Any, session: str, faults: FaultClient
) -> None:
    worker = Worker.options(SMALL).invoke()
    yr.get(worker.pid.invoke(), timeout=60)
    runtime = yr.session.current().runtime
    watch = _session_watch()
    next_incarnation = runtime.endpoint(worker.instance_id, min_incarnation=1)
    # The watch is cut and cannot resume (410), and the re-list fails until the instance is gone.
    gone = faults.add(path=PLURAL, query=watch, watch=True, action="gone", times=-1)
    listing = faults.add(method="GET", path=PLURAL, query=watch, watch=False, status=500, times=-1)
    faults.drop_watches(path=PLURAL, query=watch)
    wait_for(
        lambda: faults.hits(gone) and faults.hits(listing),
        timeout=30,
        what="the SDK to meet the 410 and then the failing list",
    )
    with cluster.api_client() as client:
        k8s.CustomObjectsApi(client).delete_namespaced_custom_object(
            GROUP, VERSION, session, PLURAL, worker.instance_id
        )
    faults.clear()
    with pytest.raises(yr.YRError, match="deleted"):
        next_incarnation.result(timeout=30)
