"""Per-caller call order as the instance server keeps it (yr/dispatch.py), one owner thread."""

from __future__ import annotations

import asyncio

from yr.dispatch import CallOrder, LoopCallOrder

DEADLINE_S = 30.0


def test_a_batch_that_arrives_before_its_predecessor_starts_right_after_it():
    order: CallOrder[str] = CallOrder()
    assert order.admit("a", 1, "a1") == []
    assert order.admit("a", 0, "a0") == ["a0", "a1"]


def test_each_callers_order_is_its_own():
    order: CallOrder[str] = CallOrder()
    assert order.admit("a", 1, "a1") == []
    assert order.admit("b", 0, "b0") == ["b0"]
    assert order.admit("a", 0, "a0") == ["a0", "a1"]


def test_batches_the_caller_has_settled_are_not_waited_for():
    order: CallOrder[str] = CallOrder()
    assert order.admit("a", 3, "a3") == []
    assert order.admit("a", 4, "a4", settled_below=3) == ["a3", "a4"]


def test_a_gap_that_lasts_too_long_is_given_up_on():
    order: CallOrder[str] = CallOrder(gap_timeout_s=0.0)
    assert order.admit("a", 2, "a2") == []
    assert order.admit("a", 3, "a3") == []
    assert order.next_deadline() is not None
    assert order.overdue() == ["a2", "a3"]
    assert order.next_deadline() is None
    assert order.admit("a", 4, "a4") == ["a4"]


def test_on_the_loop_a_later_batch_waits_for_the_earlier_one():
    async def scenario() -> list[int]:
        order = LoopCallOrder()
        started: list[int] = []

        async def run(seq: int) -> None:
            await order.admit("a", seq)
            started.append(seq)

        later = asyncio.create_task(run(1))
        await asyncio.sleep(0)  # let it reach its wait
        assert started == []
        await run(0)
        await asyncio.wait_for(later, DEADLINE_S)
        return started

    assert asyncio.run(scenario()) == [0, 1]
