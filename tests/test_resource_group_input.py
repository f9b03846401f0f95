"""Bad input to the resource-group API: a clear error naming the problem, before anything is
reserved; and openYuanrong's defaults for what a bundle leaves out."""

from __future__ import annotations

import pytest

import yr

BUNDLE = {"CPU": 1000, "Memory": 500}


def groups_of(runtime) -> list:
    return runtime.resources()[0]["resource_groups"]


@pytest.mark.parametrize(
    ("bundles", "error", "message"),
    [
        ([], ValueError, "needs a non-empty list of bundles"),
        ("CPU", ValueError, "needs a non-empty list of bundles"),
        (BUNDLE, ValueError, "needs a non-empty list of bundles"),
        ([BUNDLE, 1000], TypeError, "bundle 1 must be a dict of resource name to amount"),
        ([{"": 1}], ValueError, "bundle 0: resource names must be non-empty strings"),
        ([{"CPU": "1000"}], TypeError, r"bundle 0\['CPU'\] must be a number"),
        ([{"CPU": True}], TypeError, r"bundle 0\['CPU'\] must be a number"),
        ([{"CPU": -1}], ValueError, r"bundle 0\['CPU'\] must not be negative"),
        ([{"CPU": 1.5}], ValueError, r"bundle 0\['CPU'\] is in whole millicores"),
        ([{"CPU": 10**9}], ValueError, r"bundle 0\['CPU'\] is in whole millicores up to"),
        ([{"Memory": 10**12}], ValueError, r"bundle 0\['Memory'\] is in whole MB up to"),
        ([{"gpu": 1}], ValueError, "'gpu' is not an extended resource name"),
        ([{"example.com/fpga": 0.5}], ValueError, "must be a whole number"),
    ],
)
def test_bad_bundles_are_rejected_before_anything_is_reserved(
    local_runtime, bundles, error, message
):
    with pytest.raises(error, match=message):
        yr.create_resource_group(bundles, name="bad")
    assert groups_of(local_runtime) == []


@pytest.mark.parametrize("name", ["Team", "team_a", "-team", "team-", "", "x" * 64, 7])
def test_a_bad_group_name_is_rejected(local_runtime, name):
    with pytest.raises(ValueError, match="must be 1-63 lowercase letters, digits or '-'"):
        yr.create_resource_group([BUNDLE], name=name)
    assert groups_of(local_runtime) == []


@pytest.mark.parametrize("strategy", ["pack", "BEST", None])
def test_an_unknown_strategy_is_rejected(local_runtime, strategy):
    with pytest.raises(ValueError, match="strategy must be one of PACK, SPREAD"):
        yr.create_resource_group([BUNDLE], name="team", strategy=strategy)
    assert groups_of(local_runtime) == []


def test_a_bundle_without_cpu_or_memory_gets_openyuanrongs_defaults(local_runtime):
    group = yr.create_resource_group([{}, {"CPU": 0, "example.com/fpga": 0}], name="team")
    assert group.bundle_specs == [{"CPU": 300, "Memory": 128}, {"CPU": 300, "Memory": 128}]
    assert group.bundle_count == 2
    assert group.resource_group_name == "team"


def test_an_unnamed_group_gets_a_generated_name(local_runtime):
    group = yr.create_resource_group([BUNDLE])
    assert [row["name"] for row in groups_of(local_runtime)] == [group.resource_group_name]


@pytest.mark.parametrize(
    ("timeout", "error", "message"),
    [
        ("1", TypeError, "timeout must be seconds"),
        (True, TypeError, "timeout must be seconds"),
        (-2, ValueError, "timeout must be >= -1"),
    ],
)
def test_a_bad_wait_timeout_is_rejected(local_runtime, timeout, error, message):
    group = yr.create_resource_group([BUNDLE], name="team")
    with pytest.raises(error, match=message):
        group.wait(timeout)


@pytest.mark.parametrize(
    ("argument", "error", "message"),
    [
        (3, TypeError, "takes a ResourceGroup or its name, got int"),
        ("Bad!", ValueError, "must be 1-63 lowercase"),
    ],
)
def test_remove_rejects_what_is_not_a_group(local_runtime, argument, error, message):
    with pytest.raises(error, match=message):
        yr.remove_resource_group(argument)


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        ({"resource_group_name": 3}, TypeError, "resource_group_name must be a str"),
        ({"bundle_index": "1"}, TypeError, "bundle_index must be an integer"),
        ({"bundle_index": True}, TypeError, "bundle_index must be an integer"),
        ({"bundle_index": -2}, ValueError, r"bundle_index must be -1 \(any bundle\)"),
    ],
)
def test_bad_resource_group_options_are_rejected_on_construction(fields, error, message):
    with pytest.raises(error, match=message):
        yr.ResourceGroupOptions(**fields)


def test_resource_group_options_of_the_wrong_type_are_rejected():
    with pytest.raises(TypeError, match="resource_group_options must be a yr.ResourceGroupOptions"):
        yr.InvokeOptions(resource_group_options="team")
