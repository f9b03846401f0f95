"""Watches on the emulated API server: a short history that expires (410 Gone) and bookmarks."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from kubernetes import watch
from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException

from tests.cluster.fixtures import LocalCluster

HISTORY = 5


@pytest.fixture(scope="module")
def cluster(module_local_cluster) -> LocalCluster:
    return module_local_cluster(
        node_name=None,
        apiserver_args=["--watch-history", str(HISTORY), "--bookmark-interval", "0.2"],
    )


@pytest.fixture
def core(cluster: LocalCluster) -> Iterator[CoreV1Api]:
    with cluster.api_client() as client:
        yield CoreV1Api(client)


def config_map(name: str) -> dict:
    return {"metadata": {"name": name}, "data": {"k": "v"}}


def test_a_watch_from_a_resource_version_older_than_the_history_is_410_gone(core: CoreV1Api):
    first = core.create_namespaced_config_map("default", config_map(f"cm-{uuid.uuid4().hex[:8]}"))
    for _ in range(HISTORY + 1):
        core.create_namespaced_config_map("default", config_map(f"cm-{uuid.uuid4().hex[:8]}"))
    stream = watch.Watch().stream(
        core.list_namespaced_config_map,
        "default",
        resource_version=first.metadata.resource_version,
        timeout_seconds=5,  # no automatic retry after 410: the client must see it
    )
    with pytest.raises(ApiException) as raised:
        next(stream)
    assert raised.value.status == 410
    assert "too old resource version" in str(raised.value.reason)


def test_a_watch_from_a_recent_resource_version_replays_what_followed(core: CoreV1Api):
    first = core.create_namespaced_config_map("default", config_map(f"cm-{uuid.uuid4().hex[:8]}"))
    later = core.create_namespaced_config_map("default", config_map(f"cm-{uuid.uuid4().hex[:8]}"))
    stream = watch.Watch().stream(
        core.list_namespaced_config_map,
        "default",
        resource_version=first.metadata.resource_version,
        timeout_seconds=5,
    )
    event = next(stream)
    assert (event["type"], event["object"].metadata.name) == ("ADDED", later.metadata.name)


def test_a_quiet_watch_with_bookmarks_allowed_gets_a_bookmark_at_the_current_version(
    cluster: LocalCluster,
):
    with cluster.api_client() as client:
        core = CoreV1Api(client)
        created = core.create_namespaced_config_map(
            "default", config_map(f"cm-{uuid.uuid4().hex[:8]}")
        )
        events = watch.Watch().stream(
            core.list_namespaced_config_map,
            "default",
            resource_version=created.metadata.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=10,
            _request_timeout=15,
        )
        event = next(events)
    assert event["type"] == "BOOKMARK"
    assert event["raw_object"]["kind"] == "ConfigMap"
    assert int(event["raw_object"]["metadata"]["resourceVersion"]) >= int(
        created.metadata.resource_version
    )


def test_a_watch_without_bookmarks_allowed_gets_none(cluster: LocalCluster):
    with cluster.api_client() as client:
        core = CoreV1Api(client)
        created = core.create_namespaced_config_map(
            "default", config_map(f"cm-{uuid.uuid4().hex[:8]}")
        )
        events = list(
            watch.Watch().stream(
                core.list_namespaced_config_map,
                "default",
                resource_version=created.metadata.resource_version,
                timeout_seconds=1,
            )
        )
    assert [e["type"] for e in events] == []
