"""Bad call input is refused in the caller, at once, naming the problem."""

from __future__ import annotations

import os
import warnings

import pytest

import yr
from tests.call_instances import Mirror
from yr import options


@pytest.mark.parametrize("forever", [float("inf"), -1, None])
def test_get_with_an_infinite_timeout_waits_for_the_result(local_runtime, forever):
    mirror = Mirror.invoke()
    assert yr.get(mirror.ping.invoke(), timeout=forever) == "pong"


def test_wait_with_an_infinite_timeout_waits_for_the_result(local_runtime):
    mirror = Mirror.invoke()
    ref = mirror.ping.invoke()
    assert yr.wait([ref], timeout=float("inf")) == ([ref], [])


@pytest.mark.parametrize("bad", [float("nan"), float("-inf")])
def test_a_nan_or_negative_infinite_timeout_is_refused(bad):
    ref = yr.put(1)
    with pytest.raises(ValueError, match="timeout"):
        yr.get(ref, timeout=bad)
    with pytest.raises(ValueError, match="timeout"):
        yr.wait([ref], timeout=bad)


def test_a_method_named_like_a_handle_attribute_is_refused_at_decoration():
    class Job:
        def terminate(self) -> None:
            pass

    with pytest.raises(TypeError, match=r"Job\.terminate would be hidden"):
        yr.instance(Job)


def test_a_method_call_with_the_wrong_arguments_fails_at_invoke():
    handle = yr.InstanceHandle("mirror-0", Mirror._class_info)  # nothing needs to run
    with pytest.raises(TypeError, match=r"Mirror\.slow\(\).*missing.*'value'"):
        handle.slow.invoke(1)
    with pytest.raises(TypeError, match=r"Mirror\.ping\(\).*unexpected keyword"):
        handle.ping.invoke(loud=True)


def test_a_method_with_unpicklable_defaults_is_still_checked_at_invoke():
    import threading

    @yr.instance
    class Holder:
        def hold(self, lock=threading.Lock()) -> None:  # noqa: B008
            pass

    handle = yr.InstanceHandle("holder-0", Holder._class_info)
    with pytest.raises(TypeError, match=r"Holder\.hold\(\).*too many"):
        handle.hold.invoke(1, 2)


def test_a_cpu_below_100_millicores_warns_once(monkeypatch):
    monkeypatch.setattr(options, "_warned_low_cpu", False)
    with pytest.warns(yr.LowCPUWarning, match=r"cpu=2\).*2000"):
        yr.InvokeOptions(cpu=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yr.InvokeOptions(cpu=3)  # once per process
        yr.InvokeOptions(cpu=100)


def test_a_low_cpu_warning_can_be_silenced(monkeypatch):
    monkeypatch.setattr(options, "_warned_low_cpu", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=yr.LowCPUWarning)
        yr.InvokeOptions(cpu=2)


def test_arguments_are_checked_per_shape_after_a_call_that_was_right(local_runtime):
    mirror = Mirror.invoke()
    assert yr.get(mirror.slow.invoke(0, "v")) == "v"
    assert yr.get(mirror.ping.invoke()) == "pong"
    with pytest.raises(TypeError, match=r"Mirror\.slow\(\).*missing.*'value'"):
        mirror.slow.invoke(0)
    with pytest.raises(TypeError, match=r"Mirror\.slow\(\).*unexpected keyword"):
        mirror.slow.invoke(0, "v", loud=True)
    with pytest.raises(TypeError, match=r"Mirror\.slow\(\).*missing"):
        mirror.slow.invoke()  # the shape ping() was called with


def test_a_ref_id_names_the_process_that_made_it():
    first, second = yr.put(1), yr.put(2)
    assert first.id.startswith(f"{os.getpid():x}-")
    assert first.id != second.id and first.id == first.id
    assert first.id in repr(first)
