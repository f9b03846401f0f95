"""The operator's plan for an instance that ended itself with ``yr.exit()`` (pure, no I/O)."""

from __future__ import annotations

from yr_operator.plan import plan

from tests.test_operator_builders import NOW, pod_with, terminated, yri
from yr.contract import EXIT_CODE_SELF, REASON_EXITED, SELF_EXIT_MESSAGE


def _ready(max_restarts: int) -> dict:
    obj = yri(maxRestarts=max_restarts)
    obj["status"] = {"phase": "Ready", "restarts": 0, "podName": "w1-0"}
    return obj


def test_a_pod_that_exited_by_yr_exit_is_recorded_as_exited_not_as_an_error() -> None:
    p = plan(_ready(0), [pod_with(terminated(exitCode=EXIT_CODE_SELF))], now=0, now_iso=NOW)
    assert (p.status["phase"], p.status["reason"], p.status["message"]) == (
        "Failed",
        REASON_EXITED,
        SELF_EXIT_MESSAGE,
    )
    ended = p.status["lastTermination"]
    assert (ended["reason"], ended["message"]) == (REASON_EXITED, SELF_EXIT_MESSAGE)
    assert "exitCode" not in ended  # the words are the reason, as on the local runtime
    assert p.event == ("Normal", REASON_EXITED, SELF_EXIT_MESSAGE)


def test_yr_exit_is_not_restarted_whatever_the_restart_budget() -> None:
    p = plan(_ready(3), [pod_with(terminated(exitCode=EXIT_CODE_SELF))], now=0, now_iso=NOW)
    assert p.status["phase"] == "Failed" and p.create is None and p.restart_at is None


def test_yr_exit_deletes_the_pod_and_then_the_yrinstance() -> None:
    obj = _ready(0)
    p = plan(obj, [pod_with(terminated(exitCode=EXIT_CODE_SELF))], now=0, now_iso=NOW)
    assert p.delete == ("w1-0",) and p.delete_instance
    obj["status"] = p.status  # a reconcile that wrote the status but failed to delete retries
    assert plan(obj, [], now=1, now_iso=NOW).delete_instance


def test_a_crash_keeps_its_yrinstance() -> None:
    obj = _ready(0)
    p = plan(obj, [pod_with(terminated(exitCode=3))], now=0, now_iso=NOW)
    assert not p.delete_instance
    obj["status"] = p.status
    assert not plan(obj, [], now=1, now_iso=NOW).delete_instance
