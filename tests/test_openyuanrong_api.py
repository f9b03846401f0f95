"""openYuanrong's get / wait / put / resources semantics and import paths, on the local runtime."""

from __future__ import annotations

import concurrent.futures
import importlib

import pytest

import yr
from tests.call_instances import Mirror
from tests.instances import Counter
from yr.ignored_options import IgnoredOptionWarning, forget_warnings


def test_get_with_allow_partial_reads_refs_not_ready_in_time_as_none(local_runtime):
    mirror = Mirror.invoke()
    slow = mirror.slow.invoke(60, "late")
    ready = yr.put("now")
    assert yr.get([ready, slow], timeout=0.5, allow_partial=True) == ["now", None]


def test_get_without_allow_partial_raises_when_a_ref_is_not_ready_in_time(local_runtime):
    mirror = Mirror.invoke()
    slow = mirror.slow.invoke(60, "late")
    with pytest.raises(yr.YRTimeoutError, match="1 of 2 ref\\(s\\) not ready"):
        yr.get([yr.put(1), slow], timeout=0.5)


def test_get_with_allow_partial_still_raises_a_failed_calls_error(local_runtime):
    counter = Counter.invoke()
    failed = counter.fail.invoke("broken")
    yr.wait([failed], timeout=60)
    with pytest.raises(ValueError, match="broken"):
        yr.get([failed], timeout=5, allow_partial=True)


def test_get_of_an_empty_list_is_an_empty_list():
    assert yr.get([]) == []


def test_wait_returns_after_one_ref_by_default():
    never = yr.ObjectRef()  # settled only after the test, to free a wait that ignored wait_num
    ready = yr.put(1)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(yr.wait, [never, ready], timeout=-1)
        try:
            assert waiting.result(timeout=60) == ([ready], [never])
        finally:
            never.future.set_result(None)


def test_wait_with_timeout_zero_only_looks(local_runtime):
    mirror = Mirror.invoke()
    slow = mirror.slow.invoke(60, "late")
    ready = yr.put(1)
    assert yr.wait([slow, ready], wait_num=2, timeout=0) == ([ready], [slow])


def test_wait_with_timeout_minus_one_waits_for_wait_num_refs(local_runtime):
    counter = Counter.invoke()
    refs = [counter.add.invoke() for _ in range(5)]
    ready, pending = yr.wait(refs, wait_num=5, timeout=-1)
    assert ready == refs and pending == []


def test_wait_refuses_the_same_ref_twice():
    ref = yr.put(1)
    with pytest.raises(ValueError, match="the same ObjectRef twice"):
        yr.wait([ref, ref])


def test_wait_num_above_the_number_of_refs_is_refused():
    with pytest.raises(ValueError, match="wait_num must be an integer between 0 and 1, got 2"):
        yr.wait([yr.put(1)], wait_num=2)


def test_resources_has_openyuanrongs_shape_with_cpu_in_millicores(local_runtime):
    Counter.options(yr.InvokeOptions(cpu=1000, memory=256)).invoke().add.invoke().result(60)
    (node,) = yr.resources()
    assert node["id"] == "local" and node["status"] == 0
    assert node["capacity"]["CPU"] == 16_000.0
    assert node["allocatable"]["CPU"] == 15_000.0
    assert node["capacity"]["Memory"] - node["allocatable"]["Memory"] == 256.0


def test_put_accepts_openyuanrongs_create_param(local_runtime):
    param = yr.CreateParam()
    param.consistency_type = yr.ConsistencyType.PRAM
    counter = Counter.invoke()
    assert yr.get(counter.echo.invoke(yr.put([1, 2], param))) == [1, 2]


def test_put_with_a_create_param_setting_that_changes_nothing_warns_once():
    forget_warnings()
    param = yr.CreateParam(cache_type=yr.CacheType.DISK)
    with pytest.warns(IgnoredOptionWarning, match="CreateParam.cache_type has no effect"):
        yr.put(1, param)


def test_put_refuses_something_else_as_create_param():
    with pytest.raises(TypeError, match="create_param must be a yr.CreateParam, got dict"):
        yr.put(1, {"cache_type": 1})


def test_put_refuses_a_create_param_field_of_the_wrong_kind():
    with pytest.raises(ValueError, match="CreateParam.write_mode must be a yr.WriteMode"):
        yr.put(1, yr.CreateParam(write_mode=7))


@pytest.mark.parametrize(
    ("module", "name", "same_as"),
    [
        ("yr.decorator.instance_proxy", "InstanceProxy", yr.InstanceHandle),
        ("yr.decorator.instance_proxy", "InstanceCreator", yr.InstanceCreator),
        ("yr.decorator.instance_proxy", "MethodProxy", yr.MethodProxy),
        ("yr.object_ref", "ObjectRef", yr.ObjectRef),
        ("yr.config", "InvokeOptions", yr.InvokeOptions),
        ("yr.config", "Config", yr.Config),
        ("yr.runtime", "CreateParam", yr.CreateParam),
        ("yr", "InstanceProxy", yr.InstanceHandle),
    ],
)
def test_the_type_names_openyuanrongs_docs_use_exist_at_its_import_paths(module, name, same_as):
    assert getattr(importlib.import_module(module), name) is same_as
