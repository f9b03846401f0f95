"""Settling a future (concurrent or asyncio) that someone else may have settled already."""

from __future__ import annotations

from typing import Any


def settle(future: Any, *, result: Any = None, error: BaseException | None = None) -> None:
    """Set ``error`` or ``result`` unless the future is already done (e.g. cancelled)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
