"""The driver's session Lease, renewed on a thread of its own that nothing else can hold up.

As Kubernetes' leader election does: renew every third of the lease duration, counted from the
last renewal that landed; a renewal that fails or hangs (timeout, reset, 429/5xx) is retried
at once with backoff, honouring the server's Retry-After as far as the time the lease has left
allows, each attempt stamped afresh and bounded by a timeout. The operator collects a Lease
only once it has gone unrenewed for its duration and a grace (operator/yr_operator/leases.py).
"""

from __future__ import annotations

import logging
import threading
import time

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from yr.runtime.kubernetes import api, objects

logger = logging.getLogger("yr")
RETRY_CAP_S = 1.0  # between attempts of one renewal, when the server asks for nothing
MIN_RETRY_S = 0.05


class LeaseRenewer:
    """Keeps ``name`` in ``namespace`` renewed until :meth:`stop` (or until the Lease is gone)."""

    def __init__(
        self,
        *,
        api_client: k8s.ApiClient,
        namespace: str,
        name: str,
        duration_s: float,
    ) -> None:
        # Connections of its own: the watches and calls of the runtime never queue it.
        self._client = k8s.ApiClient(api_client.configuration)
        self._coordination = k8s.CoordinationV1Api(self._client)
        self.namespace = namespace
        self.name = name
        self.duration_s = float(duration_s)
        self.period_s = self.duration_s / 3
        self._renewed_at = time.monotonic()  # the Lease was created (stamped) just now
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="yr-lease", daemon=True)

    def start(self) -> LeaseRenewer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """No renewal after this one returns; the thread closes its connections as it ends."""
        self._stopping.set()

    def _until_due(self) -> float:
        return self._renewed_at + self.period_s - time.monotonic()

    def _left(self) -> float:
        """Seconds until the Lease, as last renewed, runs out."""
        return self._renewed_at + self.duration_s - time.monotonic()

    def _run(self) -> None:
        try:
            while not self._stopping.wait(max(0.0, self._until_due())):
                if not self._renew():
                    return
        finally:
            self._client.close()

    def _renew(self) -> bool:
        """Attempt until a renewal lands; False once the Lease is gone or we are stopping."""
        attempt = 0
        while not self._stopping.is_set():
            sent = time.monotonic()
            asked: float | None = None
            try:
                self._coordination.patch_namespaced_lease(
                    self.name,
                    self.namespace,
                    {"spec": {"renewTime": objects.now_microtime()}},
                    # Long enough for a slow server, short enough to try again in time.
                    _request_timeout=max(self._left() / 2, self.period_s / 2),
                )
            except ApiException as error:
                if error.status == 404:
                    self._lost()
                    return False
                problem: Exception = api.typed(error)
                asked = api.asked_delay(error)
            except Exception as error:  # timeout, reset, refused...: this thread must go on
                problem = error
            else:
                if attempt:
                    logger.info("yr: renewed the session lease after %d failure(s)", attempt)
                self._renewed_at = sent
                return True
            delay = self._delay(asked, attempt)
            log = logger.warning if attempt == 0 else logger.debug
            log("yr: renewing the session lease failed (%s); again in %.2fs", problem, delay)
            attempt += 1
            if self._stopping.wait(delay):
                return False
        return False

    def _delay(self, asked: float | None, attempt: int) -> float:
        """The server's Retry-After, else backoff; while the lease lasts, short enough that
        another attempt fits before it runs out."""
        delay = api.backoff(attempt, cap=RETRY_CAP_S) if asked is None else asked
        left = self._left()
        return min(delay, max(left / 2, MIN_RETRY_S)) if left > 0 else delay

    def _lost(self) -> None:
        if not self._stopping.is_set():
            logger.error(
                "yr: this driver's session Lease %s/%s is gone (deleted, or collected by the "
                "operator as expired); the instances it owned are being collected",
                self.namespace,
                self.name,
            )
