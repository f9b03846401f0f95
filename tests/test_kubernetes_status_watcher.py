"""The SDK's status watch, fed by a fake API below the kubernetes client (the API server's
answers are the boundary): an instance it listed before anyone asked about it still resolves."""

from __future__ import annotations

import concurrent.futures

import grpc
from kubernetes.client.exceptions import ApiException

from tests.support import wait_for
from yr.runtime.kubernetes.watcher import StatusWatcher

READY = {
    "metadata": {"name": "tally-1", "resourceVersion": "7"},
    "spec": {"maxRestarts": 0},
    "status": {"phase": "Ready", "podIP": "10.0.0.9", "port": 50051, "restarts": 0},
}


class _ListsOnce:
    """Lists one Ready instance; every watch fails, so nothing but the listing is heard."""

    def list_namespaced_custom_object(self, *args, watch: bool = False, **kwargs):
        if watch:
            raise ApiException(status=500, reason="no watch here")
        return {"items": [READY], "metadata": {"resourceVersion": "7"}}


def test_an_instance_listed_before_it_was_tracked_resolves_to_its_endpoint():
    watcher = StatusWatcher(
        custom_api=_ListsOnce(),
        namespace="default",
        session="abc",
        address_of=lambda name, status: f"{status['podIP']}:{status['port']}",
        open_channel=lambda address, options: grpc.insecure_channel(address),
        other_session=True,
    )
    try:
        wait_for(lambda: "tally-1" in watcher._untracked, timeout=10, what="the first listing")
        watcher.track("tally-1", class_name="Tally", schedule_timeout_s=60, exists=True)
        endpoint = watcher.endpoint("tally-1", 0).result(timeout=5)
    except concurrent.futures.TimeoutError:
        raise AssertionError("the listed instance never resolved") from None
    finally:
        watcher.stop()
    assert (endpoint.address, endpoint.session) == ("10.0.0.9:50051", "abc")
