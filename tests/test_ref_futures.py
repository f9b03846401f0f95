"""A ref's future answers done() and result() without its lock, exactly as a Future would."""

from __future__ import annotations

import concurrent.futures
import threading

import pytest

from yr.refs import ObjectRef

SETTLINGS = {
    "pending": lambda future: None,
    "a result": lambda future: future.set_result(7),
    "an error": lambda future: future.set_exception(ValueError("boom")),
    "cancelled": lambda future: future.cancel(),
}


def _outcome(future: concurrent.futures.Future) -> tuple:
    try:
        return ("value", future.result(timeout=0))
    except BaseException as error:  # a timeout, the call's error, or a cancellation
        return ("raised", type(error))


@pytest.mark.parametrize("settled_with", list(SETTLINGS))
def test_a_refs_future_reports_done_and_its_outcome_as_any_future_does(settled_with):
    ours, theirs = ObjectRef().future, concurrent.futures.Future()
    SETTLINGS[settled_with](ours)
    SETTLINGS[settled_with](theirs)
    assert ours.done() == theirs.done()
    assert _outcome(ours) == _outcome(theirs)


def test_a_refs_future_wakes_a_thread_waiting_for_it_when_it_settles():
    future = ObjectRef().future
    seen: list = []
    waiter = threading.Thread(target=lambda: seen.append(future.result(timeout=30)))
    waiter.start()
    future.set_result("ready")
    waiter.join(timeout=30)
    assert seen == ["ready"]


def test_a_refs_future_refuses_a_second_result():
    future = ObjectRef().future
    future.set_result(1)
    with pytest.raises(concurrent.futures.InvalidStateError):
        future.set_result(2)
    assert future.result() == 1
