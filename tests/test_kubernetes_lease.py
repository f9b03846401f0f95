"""A driver's session Lease on a slow or failing API server: renewals that fail or hang for
less than the lease duration keep the driver's instances (a dead driver's are still collected:
test_kubernetes_backend.py's killed-driver test).

The faults come from the emulated API server (tests/cluster/faults.py); the renewer, the real
kopf operator, the garbage collector and the pods are the real ones.
"""

from __future__ import annotations

import contextlib
import queue
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

from kubernetes import client as k8s

from tests.cluster.faults import FaultClient
from tests.cluster.fixtures import REPO
from tests.cluster.operated import yrinstances
from tests.support import wait_for
from yr.runtime.kubernetes.lease import LeaseRenewer
from yr.runtime.kubernetes.objects import now_microtime

RENEWER_LEASE_S = 10  # renewals every 3.3 s: room to tell a prompt retry from a late one


def _lease_path(namespace: str, name: str) -> str:
    return rf"^/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}$"


@contextlib.contextmanager
def _renewed_lease(cluster: Any, namespace: str) -> Iterator[float]:
    """A Lease kept by a LeaseRenewer; yields when it was created. No driver label: the
    operator leaves it alone, so what is measured is the renewer alone."""
    created = time.time()
    with cluster.api_client() as client:
        k8s.CoordinationV1Api(client).create_namespaced_lease(
            namespace,
            {
                "metadata": {"name": "renewed"},
                "spec": {
                    "holderIdentity": "test",
                    "leaseDurationSeconds": RENEWER_LEASE_S,
                    "renewTime": now_microtime(),
                },
            },
        )
        renewer = LeaseRenewer(
            api_client=client, namespace=namespace, name="renewed", duration_s=RENEWER_LEASE_S
        ).start()
    try:
        yield created
    finally:
        renewer.stop()


def _first_landed(faults: FaultClient, rule: int) -> dict[str, Any]:
    return wait_for(lambda: faults.hits(rule), timeout=60, what="a lease renewal that lands")[0]


def test_lease_renewals_cut_off_for_most_of_the_lease_are_retried_before_it_runs_out(
    cluster: Any, namespace: str, faults: FaultClient
) -> None:
    path = _lease_path(namespace, "renewed")
    with _renewed_lease(cluster, namespace) as created:
        # Every renewal in the first 7 s of the 10 s lease loses its connection.
        cut = faults.add(method="PATCH", path=path, action="reset", times=-1, seconds=7)
        landed = faults.add(method="PATCH", path=path, times=0)  # sees what got through
        first = _first_landed(faults, landed)
    assert any(hit["faulted"] for hit in faults.hits(cut))
    assert first["time"] - created < RENEWER_LEASE_S, "the lease ran out before a renewal"


def test_a_lease_renewal_stuck_in_a_slow_api_server_is_given_up_and_sent_again(
    cluster: Any, namespace: str, faults: FaultClient
) -> None:
    path = _lease_path(namespace, "renewed")
    with _renewed_lease(cluster, namespace) as created:
        stuck = faults.add(method="PATCH", path=path, delay=20, times=1)
        landed = faults.add(method="PATCH", path=path, times=0)
        first = _first_landed(faults, landed)
    assert faults.hits(stuck)[0]["faulted"]
    assert first["time"] - created < RENEWER_LEASE_S, "the lease ran out before a renewal"


DRIVER = textwrap.dedent(
    """
    import sys
    import yr
    from tests.k8s_instances import Lead
    yr.init(yr.Config(backend="kubernetes"))  # YR_NAMESPACE
    lead = Lead.invoke(1)
    yr.get(lead.train.invoke(0.5), timeout=120)
    print("ready", flush=True)
    for _ in sys.stdin:  # one more call through the tree per line
        print(len(yr.get(lead.train.invoke(0.5), timeout=120)), flush=True)
    """
)
# Renewals every 8/3 s; the operator's grace on the shared cluster is 3 s.
DRIVER_LEASE_S = "8"
SLOW_S, SPELL_S = 7.0, 5.0  # each renewal answered 7 s late, for 5 s: less than the lease


def _driver_leases(cluster: Any, namespace: str) -> list[str]:
    with cluster.api_client() as client:
        leases = k8s.CoordinationV1Api(client).list_namespaced_lease(
            namespace, label_selector="yr.dev/driver=true"
        )
    return [lease.metadata.name for lease in leases.items]


def _line_reader(driver: subprocess.Popen) -> queue.Queue[str]:
    """The driver's output lines, so that each read has a deadline (a hung driver fails)."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(line.strip()) for line in driver.stdout], daemon=True
    ).start()
    return lines


def _uids(cluster: Any, namespace: str) -> dict[str, str]:
    return {i["metadata"]["name"]: i["metadata"]["uid"] for i in yrinstances(cluster, namespace)}


def test_a_driver_whose_lease_renewals_are_slow_for_a_while_keeps_its_instances(
    cluster: Any, instance_namespace: str, faults: FaultClient
) -> None:
    env = dict(
        cluster.env, YR_NAMESPACE=instance_namespace, YR_LEASE_DURATION_SECONDS=DRIVER_LEASE_S
    )
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER],
        env=env,
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        lines = _line_reader(driver)
        assert lines.get(timeout=180) == "ready"
        before = _uids(cluster, instance_namespace)
        (lease,) = _driver_leases(cluster, instance_namespace)
        path = _lease_path(instance_namespace, lease)
        slow = faults.add(method="PATCH", path=path, delay=SLOW_S, times=-1, seconds=SPELL_S)
        landed = faults.add(method="PATCH", path=path, times=0)
        _first_landed(faults, landed)
        # Until every slowed renewal has been answered: the operator has seen it all.
        wait_for(
            lambda: time.time() > max(h["time"] for h in faults.hits(slow)) + SLOW_S,
            timeout=60,
            what="the slowed renewals to be answered",
        )
        assert _driver_leases(cluster, instance_namespace) == [lease], "the Lease was collected"
        assert _uids(cluster, instance_namespace) == before
        driver.stdin.write("again\n")
        driver.stdin.flush()
        assert lines.get(timeout=180) == "1"
    finally:
        driver.stdin.close()
        try:
            driver.wait(60)
        except subprocess.TimeoutExpired:
            driver.kill()
            driver.wait()
