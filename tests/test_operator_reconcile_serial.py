"""The operator never runs two reconciles of one instance at once (a per-instance lock)."""

from __future__ import annotations

import asyncio
from typing import Any

from yr_operator.reconcile import Reconciler


class SlowKube:
    """Just enough of Kube: every read takes a moment, and we count overlapping reads."""

    def __init__(self) -> None:
        self.active = 0
        self.most = 0

    async def get_yrinstance(self, *, namespace: str, name: str) -> dict[str, Any] | None:
        self.active += 1
        self.most = max(self.most, self.active)
        await asyncio.sleep(0.01)
        self.active -= 1
        return None  # deleted: the reconcile ends here


def test_a_reconcile_arriving_as_the_lock_changes_hands_still_waits_its_turn():
    async def scenario() -> int:
        kube = SlowKube()
        reconciler = Reconciler(kube=kube, image="img", service_account="sa")  # type: ignore[arg-type]
        later: list[asyncio.Future[None]] = []
        first = asyncio.ensure_future(reconciler.reconcile(namespace="ns", name="w"))
        await asyncio.sleep(0)  # the first holds the lock
        second = asyncio.ensure_future(reconciler.reconcile(namespace="ns", name="w"))
        await asyncio.sleep(0)  # the second waits for it
        # A third arrives the moment the first is done, before the second has woken up.
        first.add_done_callback(
            lambda _: later.append(
                asyncio.ensure_future(reconciler.reconcile(namespace="ns", name="w"))
            )
        )
        await asyncio.gather(first, second)
        await asyncio.gather(*later)
        return kube.most

    assert asyncio.run(scenario()) == 1
