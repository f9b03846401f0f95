"""The operator's Prometheus series: reconciles, instances by phase, restarts, failures, startup.

Served with ``yr-operator --metrics HOST:PORT`` (the chart turns it on). Everything is kept in
one registry of our own, so the endpoint shows these series and the process's, nothing else.
"""

from __future__ import annotations

import contextlib
import datetime
import http
import logging
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.process_collector import ProcessCollector

from yr.contract import PHASES, READY, RESTARTING

log = logging.getLogger("yr_operator")
REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)

RECONCILES = Counter(
    "yr_operator_reconciles",
    "Reconciles of a YRInstance, by outcome.",
    ["outcome"],
    registry=REGISTRY,
)
RECONCILE_SECONDS = Histogram(
    "yr_operator_reconcile_duration_seconds", "Time one reconcile took.", registry=REGISTRY
)
RESTARTS = Counter(
    "yr_operator_instance_restarts", "Incarnations restarted after a death.", registry=REGISTRY
)
POD_CREATE_FAILURES = Counter(
    "yr_operator_pod_create_failures",
    "Pods the API server refused to create, by HTTP reason.",
    ["reason"],
    registry=REGISTRY,
)
TIME_TO_READY = Histogram(
    "yr_operator_time_to_ready_seconds",
    "From a YRInstance's creation to its first Ready.",
    buckets=(0.25, 0.5, 1, 2, 3, 5, 8, 13, 21, 34, 60, 120, 300),
    registry=REGISTRY,
)


class _Phases:
    """The phase each YRInstance was last seen in, reported as a gauge at scrape time."""

    def __init__(self) -> None:
        self.by_instance: dict[tuple[str, str], str] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "yr_operator_instances", "YRInstances by status.phase.", labels=["phase"]
        )
        counts = dict.fromkeys(PHASES, 0)
        for phase in list(self.by_instance.values()):
            counts[phase] = counts.get(phase, 0) + 1
        for phase, count in counts.items():
            family.add_metric([phase], count)
        yield family


PHASE_GAUGE = _Phases()
REGISTRY.register(PHASE_GAUGE)


@contextlib.contextmanager
def reconciling() -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    except BaseException:
        RECONCILES.labels(outcome="error").inc()
        raise
    else:
        RECONCILES.labels(outcome="ok").inc()
    finally:
        RECONCILE_SECONDS.observe(time.perf_counter() - started)


def observe(yri: dict[str, Any], status: dict[str, Any] | None) -> None:
    """After a reconcile decided ``status`` (None: unchanged) for ``yri``."""
    meta, current = yri["metadata"], yri.get("status") or {}
    now_phase = current.get("phase")
    phase = (status or current).get("phase")
    if phase:
        PHASE_GAUGE.by_instance[(meta["namespace"], meta["name"])] = phase
    if status is None or phase == now_phase:
        return
    if phase == RESTARTING:
        RESTARTS.inc()
    elif phase == READY and int(status.get("restarts") or 0) == 0:  # the first incarnation
        created = meta.get("creationTimestamp")
        if created:
            born = datetime.datetime.fromisoformat(created.replace("Z", "+00:00"))
            age = datetime.datetime.now(datetime.timezone.utc) - born
            TIME_TO_READY.observe(max(age.total_seconds(), 0.0))


def pod_create_failed(status_code: int) -> None:
    try:
        reason = http.HTTPStatus(status_code).phrase  # Forbidden (quota, RBAC), Unprocessable...
    except ValueError:
        reason = str(status_code)
    POD_CREATE_FAILURES.labels(reason=reason).inc()


def forget(namespace: str, name: str) -> None:
    PHASE_GAUGE.by_instance.pop((namespace, name), None)


def serve(listen: str) -> str:
    """Serve /metrics on ``HOST:PORT`` (port 0: any free one); returns the URL."""
    from prometheus_client import start_http_server

    host, _, port = listen.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host or "0.0.0.0", registry=REGISTRY)
    url = f"http://{host or '0.0.0.0'}:{server.server_address[1]}/metrics"
    log.info("yr-operator: metrics on %s", url)
    return url
