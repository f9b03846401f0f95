"""Bad input gets a clear error naming the problem, raised before anything is created."""

from __future__ import annotations

import threading

import pytest

import yr
from tests.instances import Counter
from tests.support import assert_init_refused_starting_nothing
from yr.call_failures import DEATH_REPORT_TIMEOUT_ENV


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"cpu": 0}, ValueError, "InvokeOptions.cpu must be between 1 and"),
        ({"cpu": -500}, ValueError, "InvokeOptions.cpu must be between 1 and"),
        ({"cpu": 1.5}, TypeError, "InvokeOptions.cpu must be an integer, got float"),
        ({"cpu": "1000"}, TypeError, "InvokeOptions.cpu must be an integer, got str"),
        ({"cpu": True}, TypeError, "InvokeOptions.cpu must be an integer, got bool"),
        ({"cpu": 10**9}, ValueError, "InvokeOptions.cpu must be between"),
        ({"memory": -1}, ValueError, "InvokeOptions.memory must be between 1 and"),
        ({"concurrency": 0}, ValueError, "InvokeOptions.concurrency"),
        ({"recover_retry_times": -1}, ValueError, "InvokeOptions.recover_retry_times"),
        ({"schedule_timeout_ms": 0}, ValueError, "InvokeOptions.schedule_timeout_ms"),
        ({"env_vars": {"A": 1}}, TypeError, "InvokeOptions.env_vars"),
        ({"cpus": 1000}, TypeError, "unknown option\\(s\\) 'cpus'"),
    ],
)
def test_invalid_invoke_options_are_rejected_on_construction(options, error, message):
    with pytest.raises(error, match=message):
        yr.InvokeOptions(**options)


@pytest.mark.parametrize("value", ["0", "soon", "86400001"])
def test_a_bad_yr_schedule_timeout_ms_is_an_error_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("YR_SCHEDULE_TIMEOUT_MS", value)
    with pytest.raises(ValueError, match=f"environment variable YR_SCHEDULE_TIMEOUT_MS .*{value}"):
        yr.InvokeOptions()


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf"])
def test_a_bad_yr_death_report_timeout_s_is_refused_before_anything_starts(monkeypatch, value):
    monkeypatch.setenv(DEATH_REPORT_TIMEOUT_ENV, value)
    assert_init_refused_starting_nothing(f"{DEATH_REPORT_TIMEOUT_ENV}={value!r}")


def test_an_unknown_config_option_is_rejected():
    with pytest.raises(TypeError, match="unknown option\\(s\\) 'cpus'"):
        yr.Config(cpus=4)


def test_an_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="Config.backend must be one of"):
        yr.Config(backend="yarn")


def test_a_second_init_is_refused(local_runtime):
    with pytest.raises(yr.YRError, match="already called"):
        yr.init()


def test_using_yr_before_init_says_to_call_init():
    with pytest.raises(yr.YRNotInitializedError, match="call yr.init"):
        Counter.invoke()


@pytest.mark.parametrize("timeout", [0, -5, -0.5])
def test_get_with_a_non_positive_timeout_is_refused(local_runtime, timeout):
    ref = yr.put(1)
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        yr.get(ref, timeout=timeout)


@pytest.mark.parametrize("not_a_ref", [42, "ref", [yr.put(1), 3]])
def test_get_on_something_that_is_not_a_ref_is_refused(local_runtime, not_a_ref):
    with pytest.raises(TypeError, match="takes an ObjectRef or a list of ObjectRefs"):
        yr.get(not_a_ref)


def test_a_method_that_does_not_exist_is_named_with_a_suggestion(local_runtime):
    counter = Counter.invoke()
    with pytest.raises(AttributeError, match="Counter has no method 'ad'; did you mean 'add'"):
        counter.ad.invoke()


def test_an_unpicklable_argument_is_named_with_the_reason(local_runtime):
    counter = Counter.invoke()
    with pytest.raises(yr.YRSerializationError, match="argument 1 \\(lock\\) of Counter.fill") as e:
        counter.fill.invoke(1, threading.Lock())
    assert "cannot pickle '_thread.lock' object" in str(e.value)


def test_an_unpicklable_constructor_argument_creates_nothing(local_runtime):
    with pytest.raises(yr.YRSerializationError, match="argument 'start'"):
        Counter.invoke(start=threading.Lock())
    assert yr.resources()[0]["instances"] == 0


def test_wrong_constructor_arguments_are_refused_before_creation(local_runtime):
    with pytest.raises(TypeError, match="Counter\\(\\)"):
        Counter.invoke(1, 2, 3)
    assert yr.resources()[0]["instances"] == 0


def test_calling_an_instance_class_directly_explains_invoke():
    with pytest.raises(TypeError, match="Counter.invoke"):
        Counter()


def test_calling_a_method_directly_explains_invoke(local_runtime):
    counter = Counter.invoke()
    with pytest.raises(TypeError, match="invoke"):
        counter.add(1)


class _Optimizer:
    def __init__(self) -> None:
        self.rate = 0.1
        self.guard = threading.Lock()


class _Model:
    def __init__(self) -> None:
        self.weights = [1.0, 2.0]
        self.optimizer = _Optimizer()


def test_an_unpicklable_attribute_deep_inside_an_argument_is_named_by_its_path(local_runtime):
    counter = Counter.invoke()
    with pytest.raises(yr.YRSerializationError, match=r"culprit: argument 0\.optimizer\.guard"):
        counter.echo.invoke(_Model())
