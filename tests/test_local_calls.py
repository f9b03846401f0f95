"""Calls on the local runtime: results, ordering, concurrency, refs, errors and output."""

from __future__ import annotations

import pytest

import yr
from tests.instances import BrokenInit, Counter, Relay, Rendezvous, ThreadBound
from yr.runtime.local.runtime import LocalRuntime


@pytest.fixture
def local_runtime(shared_local_runtime: LocalRuntime) -> LocalRuntime:
    """This module's tests do not interfere: they share one session, each cleaned up after."""
    return shared_local_runtime


def test_a_method_call_returns_its_result(local_runtime):
    counter = Counter.invoke(10)
    assert yr.get(counter.add.invoke(5)) == 15


def test_calls_from_one_caller_run_in_submission_order(local_runtime):
    counter = Counter.invoke()
    refs = [counter.record.invoke(i) for i in range(300)]
    yr.get(refs)
    assert yr.get(counter.history.invoke()) == list(range(300))


def test_state_persists_between_calls(local_runtime):
    counter = Counter.invoke()
    yr.get([counter.add.invoke() for _ in range(10)])
    assert yr.get(counter.add.invoke(0)) == 10


def test_concurrency_above_one_runs_calls_at_the_same_time(local_runtime):
    meeting = Rendezvous.invoke()
    assert yr.get([meeting.meet.invoke(), meeting.meet.invoke()], timeout=30) == ["met", "met"]


def test_a_list_of_refs_gives_a_list_of_values(local_runtime):
    counters = [Counter.invoke(i) for i in range(3)]
    assert yr.get([c.add.invoke(0) for c in counters]) == [0, 1, 2]


def test_a_ref_passed_as_an_argument_arrives_as_its_value(local_runtime):
    first, second = Counter.invoke(41), Counter.invoke()
    assert yr.get(second.echo.invoke(first.add.invoke(1))) == 42


def test_put_values_travel_to_the_instance(local_runtime):
    counter = Counter.invoke()
    ref = yr.put({"weights": [1, 2, 3]})
    assert yr.get(counter.echo.invoke(ref)) == {"weights": [1, 2, 3]}


def test_return_nums_splits_the_result_into_refs(local_runtime):
    counter = Counter.invoke()
    left, right = counter.pair.invoke("a", "b")
    assert (yr.get(left), yr.get(right)) == ("a", "b")


def test_wait_returns_ready_and_pending_refs(local_runtime):
    counter, sleeper = Counter.invoke(), Counter.invoke()
    slow = sleeper.sleep.invoke(30)
    fast = counter.add.invoke()
    ready, pending = yr.wait([slow, fast], wait_num=1, timeout=20)
    assert ready == [fast] and pending == [slow]


def test_get_times_out_with_a_timeout_error(local_runtime):
    counter = Counter.invoke()
    with pytest.raises(yr.YRTimeoutError) as caught:
        yr.get(counter.sleep.invoke(30), timeout=0.3)
    assert isinstance(caught.value, TimeoutError)


def test_a_user_exception_is_caught_as_its_own_type_with_the_remote_traceback(local_runtime):
    counter = Counter.invoke()
    with pytest.raises(ValueError, match="bad shard") as caught:
        yr.get(counter.fail.invoke("bad shard"))
    assert isinstance(caught.value, yr.YRInvokeError)
    assert "Remote traceback" in str(caught.value)
    assert "in fail" in str(caught.value)


def test_an_exception_in_init_surfaces_on_first_use_with_its_traceback(local_runtime):
    broken = BrokenInit.invoke()
    with pytest.raises(RuntimeError, match="missing configuration") as caught:
        yr.get(broken.ping.invoke())
    assert "__init__" in str(caught.value)


def test_named_instances_are_found_with_get_instance(local_runtime):
    Counter.options(yr.InvokeOptions(cpu=100, name="tally", namespace="team")).invoke(7)
    found = yr.get_instance("tally", namespace="team")
    assert yr.get(found.add.invoke(1)) == 8


def test_a_second_instance_with_the_same_name_is_refused(local_runtime):
    named = yr.InvokeOptions(cpu=100, name="only-one")
    Counter.options(named).invoke()
    with pytest.raises(ValueError, match="already exists"):
        Counter.options(named).invoke()


def test_handles_can_be_passed_to_other_instances(local_runtime):
    target, relay = Counter.invoke(1), Counter.invoke()
    handle_copy = yr.get(relay.echo.invoke(target))
    assert yr.get(handle_copy.add.invoke(1)) == 2


def test_what_an_instance_prints_reaches_the_driver_with_its_identity(local_runtime, capsys):
    counter = Counter.invoke()
    pid = yr.get(counter.pid.invoke())
    yr.get(counter.say.invoke("hello from the instance"))
    from tests.support import wait_for

    seen: list[str] = []

    def printed() -> bool:
        seen.append(capsys.readouterr().out)
        return "hello from the instance" in "".join(seen)

    wait_for(printed, timeout=10, what="the instance's output in the driver")
    line = next(x for x in "".join(seen).splitlines() if "hello from the instance" in x)
    assert line.startswith(f"({counter.instance_id} pid={pid})")


def test_resources_report_capacity_and_use(local_runtime):
    counter = Counter.invoke()
    yr.get(counter.add.invoke())
    (node,) = yr.resources()
    assert node["cpu_total"] == 16000
    assert node["cpu_used"] == 100


def test_five_thousand_calls_in_flight_all_complete(local_runtime):
    counter = Counter.invoke()
    refs = [counter.add.invoke() for _ in range(5000)]
    assert yr.get(refs, timeout=120)[-1] == 5000


def test_init_and_every_call_run_on_one_thread_when_concurrency_is_one(local_runtime):
    keeper = ThreadBound.invoke()
    assert yr.get([keeper.store.invoke(i) for i in range(20)]) == list(range(1, 21))


def test_an_instance_can_call_a_handle_it_was_given(local_runtime):
    counter, relay = Counter.invoke(1), Relay.invoke()
    assert yr.get(relay.forward.invoke(counter, 5)) == 6


def test_an_instance_can_find_a_named_instance(local_runtime):
    Counter.options(yr.InvokeOptions(cpu=100, name="shared")).invoke(10)
    assert yr.get(Relay.invoke().add_to_named.invoke("shared", 1)) == 11


def test_a_module_registered_by_value_need_not_be_importable_by_instances(
    local_runtime, tmp_path, monkeypatch
):
    import importlib

    import cloudpickle

    (tmp_path / "private_models.py").write_text(
        "import yr\n\n"
        "@yr.instance(invoke_options=yr.InvokeOptions(cpu=100))\n"
        "class Doubler:\n"
        "    def double(self, x):\n"
        "        return 2 * x\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))  # the driver sees it; instances do not
    module = importlib.import_module("private_models")
    cloudpickle.register_pickle_by_value(module)
    try:
        assert yr.get(module.Doubler.invoke().double.invoke(21)) == 42
    finally:
        cloudpickle.unregister_pickle_by_value(module)
