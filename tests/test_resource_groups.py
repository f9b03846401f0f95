"""Resource groups on the local runtime: all-or-nothing admission, placement in bundles,
removal, and groups created by instances through the driver's control server."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

import yr
from tests.group_instances import Member, Parent, TeamLead, in_group
from tests.instances import Counter
from tests.local_fixtures import local_session
from tests.support import all_dead, wait_for
from yr.runtime.local.runtime import LocalRuntime

BUNDLE = {"CPU": 1000, "Memory": 500}


@pytest.fixture
def four_cpus() -> Iterator[LocalRuntime]:
    with local_session(yr.Config(num_cpus=4, resources={"example.com/fpga": 2})) as runtime:
        yield runtime


def group_rows(runtime: LocalRuntime) -> dict[str, dict]:
    return {row["name"]: row for row in runtime.resources()[0]["resource_groups"]}


def held(runtime: LocalRuntime) -> dict[str, int]:
    """What the ledger holds, checking that a group is never held in part."""
    holders = runtime._ledger.holders()
    for name, row in group_rows(runtime).items():
        whole = sum(bundle["CPU"] for bundle in row["bundles"])
        assert holders.get(f"resource-group/{name}", 0) in (0, whole), holders
        assert (row["state"] == "admitted") == (f"resource-group/{name}" in holders)
    return holders


# -- admission ---------------------------------------------------------------------------------


def test_two_groups_that_cannot_both_fit_run_one_after_the_other(four_cpus):
    first = yr.create_resource_group([BUNDLE] * 3, name="first")
    second = yr.create_resource_group([BUNDLE] * 3, name="second")
    assert held(four_cpus) == {"resource-group/first": 3000}
    first.wait(30)
    first_team = [Member.options(in_group("first", i)).invoke() for i in range(3)]
    second_team = [Member.options(in_group("second", i)).invoke() for i in range(3)]
    assert len(set(yr.get([m.pid.invoke() for m in first_team], timeout=60))) == 3
    waiting = [m.pid.invoke() for m in second_team]
    assert yr.wait(waiting, wait_num=1, timeout=0.5)[0] == []
    assert held(four_cpus) == {"resource-group/first": 3000}  # the second holds nothing
    assert group_rows(four_cpus)["second"]["state"] == "pending"

    yr.remove_resource_group(first)
    second.wait(30)
    assert held(four_cpus) == {"resource-group/second": 3000}
    assert len(set(yr.get(waiting, timeout=60))) == 3
    assert held(four_cpus) == {"resource-group/second": 3000}


def test_a_group_holds_nothing_while_any_bundle_does_not_fit(four_cpus):
    hog = Counter.options(yr.InvokeOptions(cpu=2000)).invoke()
    yr.get(hog.add.invoke())
    yr.create_resource_group([BUNDLE] * 3, name="team")
    assert held(four_cpus) == {hog.instance_id: 2000}
    assert four_cpus._ledger.free == 2000  # two bundles would fit: none is taken
    hog.terminate(is_sync=True)
    wait_for(lambda: "resource-group/team" in held(four_cpus), timeout=30, what="admission")
    assert held(four_cpus) == {"resource-group/team": 3000}


def test_a_group_larger_than_the_whole_capacity_fails_at_create(four_cpus):
    with pytest.raises(yr.YRSchedulingError, match=r"1000m \+ .* = 5000m CPU .* capacity is 4000m"):
        yr.create_resource_group([BUNDLE] * 5, name="too-big")
    assert group_rows(four_cpus) == {}


def test_a_bundle_larger_than_the_whole_capacity_fails_at_create(four_cpus):
    with pytest.raises(yr.YRSchedulingError, match="bundle 1 requests 5000m CPU .* 4000m"):
        yr.create_resource_group([BUNDLE, {"CPU": 5000}], name="big-bundle")
    assert group_rows(four_cpus) == {}


def test_custom_resources_beyond_the_capacity_fail_at_create(four_cpus):
    bundle = {**BUNDLE, "example.com/fpga": 2}
    with pytest.raises(
        yr.YRSchedulingError, match="example.com/fpga: 4 in all .* capacity is example.com/fpga: 2"
    ):
        yr.create_resource_group([bundle, bundle], name="fpgas")
    assert group_rows(four_cpus) == {}


def test_a_group_reserves_its_custom_resources_on_the_ledger(four_cpus):
    yr.create_resource_group([{**BUNDLE, "example.com/fpga": 2}], name="fpgas").wait(30)
    assert four_cpus._ledger.custom_free("example.com/fpga") == 0


def test_yr_resources_counts_an_admitted_group_as_allocated(four_cpus):
    (before,) = yr.resources()
    yr.create_resource_group([BUNDLE, BUNDLE], name="team").wait(30)
    (after,) = yr.resources()
    assert after["allocatable"]["CPU"] == before["allocatable"]["CPU"] - 2000
    assert after["allocatable"]["Memory"] == before["allocatable"]["Memory"] - 1000
    assert [group["name"] for group in after["resource_groups"]] == ["team"]


def test_a_taken_group_name_is_an_error(four_cpus):
    yr.create_resource_group([BUNDLE], name="taken")
    with pytest.raises(ValueError, match="'taken' already exists"):
        yr.create_resource_group([BUNDLE], name="taken")


def test_wait_past_its_timeout_reports_the_arithmetic(four_cpus):
    yr.create_resource_group([BUNDLE] * 3, name="first")
    second = yr.create_resource_group([BUNDLE] * 2, name="second")
    with pytest.raises(RuntimeError) as caught:
        second.wait(1)
    message = str(caught.value)
    assert "'second' was not admitted within 1 s" in message
    assert "1000m + 1000m = 2000m CPU, but only 1000m of the local runtime's 4000m" in message
    assert "resource-group/first 3000m" in message


def test_spread_strategies_are_admitted_on_the_one_local_node(four_cpus):
    for strategy in ("SPREAD", "STRICT_SPREAD", "STRICT_PACK"):
        group = yr.create_resource_group(
            [BUNDLE], name=strategy.lower().replace("_", "-"), strategy=strategy
        )
        group.wait(30)
        yr.remove_resource_group(group)


# -- placement ---------------------------------------------------------------------------------


def test_an_instance_placed_in_a_bundle_uses_its_reservation_not_the_free_pool(four_cpus):
    yr.create_resource_group([BUNDLE, BUNDLE], name="team").wait(30)
    member = Member.options(in_group("team", 1)).invoke()
    yr.get(member.pid.invoke())
    assert held(four_cpus) == {"resource-group/team": 2000}
    assert group_rows(four_cpus)["team"]["members"] == {member.instance_id: 1}
    assert group_rows(four_cpus)["team"]["bundles"][1]["free"]["CPU"] == 0
    outsider = Counter.options(yr.InvokeOptions(cpu=2000)).invoke()  # the free pool is whole
    yr.get(outsider.add.invoke(), timeout=60)


def test_an_instance_ending_frees_its_share_of_the_bundle(four_cpus):
    yr.create_resource_group([BUNDLE], name="team").wait(30)
    first = Member.options(in_group("team", 0)).invoke()
    yr.get(first.pid.invoke())
    first.terminate(is_sync=True)
    second = Member.options(in_group("team", 0)).invoke()
    yr.get(second.pid.invoke(), timeout=60)
    assert group_rows(four_cpus)["team"]["members"] == {second.instance_id: 0}


def test_bundle_index_minus_one_picks_a_bundle_with_room(four_cpus):
    yr.create_resource_group([{"CPU": 500, "Memory": 500}, BUNDLE], name="team").wait(30)
    large = Member.options(in_group("team", -1, cpu=1000)).invoke()
    small = Member.options(in_group("team", -1, cpu=500)).invoke()
    yr.get([large.pid.invoke(), small.pid.invoke()], timeout=60)
    members = group_rows(four_cpus)["team"]["members"]
    assert members == {large.instance_id: 1, small.instance_id: 0}


def test_a_bundle_too_small_for_the_instance_is_an_error_at_invoke(four_cpus):
    yr.create_resource_group([{"CPU": 500, "Memory": 128}], name="team")
    with pytest.raises(yr.YRSchedulingError) as caught:
        Member.options(in_group("team", 0)).invoke()
    assert (
        "requests 1000m CPU, 500 MB memory but bundle 0 of resource group 'team' has "
        "500m CPU, 128 MB memory" in str(caught.value)
    )
    assert four_cpus.resources()[0]["instances"] == 0


def test_a_bundle_with_too_little_memory_for_the_instance_is_an_error_at_invoke(four_cpus):
    yr.create_resource_group([{"CPU": 1000, "Memory": 128}], name="team")
    with pytest.raises(yr.YRSchedulingError, match="500 MB memory but bundle 0 .* 128 MB"):
        Member.options(in_group("team", 0)).invoke()
    assert four_cpus.resources()[0]["instances"] == 0


def test_no_bundle_large_enough_for_any_index_is_an_error_at_invoke(four_cpus):
    yr.create_resource_group([{"CPU": 500, "Memory": 500}] * 2, name="team")
    with pytest.raises(yr.YRSchedulingError, match="no bundle of resource group 'team'"):
        Member.options(in_group("team", -1)).invoke()
    assert four_cpus.resources()[0]["instances"] == 0


def test_an_unknown_group_is_an_error_at_invoke(four_cpus):
    with pytest.raises(ValueError, match="no resource group 'nowhere' in this session"):
        Member.options(in_group("nowhere", 0)).invoke()
    assert four_cpus.resources()[0]["instances"] == 0


def test_a_bundle_index_out_of_range_is_an_error_at_invoke(four_cpus):
    yr.create_resource_group([BUNDLE, BUNDLE], name="team")
    with pytest.raises(ValueError, match=r"bundle_index 2 is out of range: .* 2 bundle\(s\)"):
        Member.options(in_group("team", 2)).invoke()
    assert four_cpus.resources()[0]["instances"] == 0


def test_an_instance_waits_for_its_group_to_be_admitted_then_runs(four_cpus):
    yr.create_resource_group([BUNDLE] * 3, name="first").wait(30)
    yr.create_resource_group([BUNDLE] * 3, name="second")
    waiting = Member.options(in_group("second", 0)).invoke().pid.invoke()
    assert yr.wait([waiting], timeout=0.5)[0] == []
    yr.remove_resource_group("first")
    assert yr.get(waiting, timeout=60) > 0


def test_an_instance_waiting_for_its_group_past_its_timeout_gets_the_arithmetic(four_cpus):
    yr.create_resource_group([BUNDLE] * 3, name="first")
    yr.create_resource_group([BUNDLE] * 3, name="second")
    member = Member.options(in_group("second", 0, schedule_timeout_ms=500)).invoke()
    with pytest.raises(yr.YRSchedulingError) as caught:
        yr.get(member.pid.invoke(), timeout=60)
    message = str(caught.value)
    assert "could not be placed in resource group 'second' within 500 ms" in message
    assert "1000m of the local runtime's 4000m is free" in message


def test_an_instance_waiting_for_room_in_its_bundle_past_its_timeout_gets_the_arithmetic(
    four_cpus,
):
    yr.create_resource_group([BUNDLE], name="team").wait(30)
    first = Member.options(in_group("team", 0)).invoke()
    yr.get(first.pid.invoke())
    second = Member.options(in_group("team", 0, schedule_timeout_ms=500)).invoke()
    with pytest.raises(yr.YRSchedulingError) as caught:
        yr.get(second.pid.invoke(), timeout=60)
    assert f"bundle 0 has 0m CPU, 0 MB memory left (used by: {first.instance_id})" in str(
        caught.value
    )


# -- removal and owners ------------------------------------------------------------------------


def test_removing_a_group_ends_its_instances_and_their_subtrees(four_cpus):
    yr.create_resource_group([BUNDLE], name="team").wait(30)
    parent = Parent.options(in_group("team", 0)).invoke()
    pids = yr.get(parent.pids.invoke(), timeout=60)
    yr.remove_resource_group("team")
    wait_for(lambda: all_dead(pids), timeout=30, what="the group's instance and its child")
    assert held(four_cpus) == {}
    assert group_rows(four_cpus) == {}
    with pytest.raises(yr.YRError, match="resource group 'team' was removed"):
        yr.get(parent.pids.invoke(), timeout=30)


def test_removing_a_waiting_group_fails_its_waiters(four_cpus):
    yr.create_resource_group([BUNDLE] * 3, name="first")
    second = yr.create_resource_group([BUNDLE] * 3, name="second")
    errors: list[BaseException] = []
    waiter = threading.Thread(target=lambda: _catch(errors, lambda: second.wait(60)))
    waiter.start()
    yr.remove_resource_group("second")
    waiter.join(30)
    assert not waiter.is_alive()
    assert "resource group 'second' was removed" in str(errors[0])


def test_removing_an_unknown_group_is_an_error(four_cpus):
    with pytest.raises(ValueError, match="no resource group 'nowhere'"):
        yr.remove_resource_group("nowhere")


def test_finalizing_the_driver_removes_its_groups(four_cpus):
    yr.create_resource_group([BUNDLE], name="team").wait(30)
    pid = yr.get(Member.options(in_group("team", 0)).invoke().pid.invoke())
    yr.finalize()
    assert held(four_cpus) == {}
    assert group_rows(four_cpus) == {}
    wait_for(lambda: all_dead([pid]), timeout=30, what="the group's member to exit")


# -- groups made by instances ------------------------------------------------------------------


def test_an_instance_creates_a_group_and_places_its_team_in_it(four_cpus):
    lead = TeamLead.invoke()
    formed = yr.get(lead.form_team.invoke("team", 3), timeout=60)
    assert len(set(formed["team"])) == 3
    rows = group_rows(four_cpus)
    assert rows["team"]["owner"] == lead.instance_id
    assert sorted(rows["team"]["members"].values()) == [0, 1, 2]
    assert held(four_cpus) == {lead.instance_id: 100, "resource-group/team": 3000}


def test_the_owner_instance_ending_removes_its_group_and_team(four_cpus):
    lead = TeamLead.invoke()
    team = yr.get(lead.form_team.invoke("team", 2), timeout=60)["team"]
    lead.terminate(is_sync=True)
    assert group_rows(four_cpus) == {}
    assert held(four_cpus) == {}
    wait_for(lambda: all_dead(team), timeout=30, what="the team to exit")


def test_the_owner_instance_crashing_removes_its_group_and_team(four_cpus):
    lead = TeamLead.invoke()
    team = yr.get(lead.form_team.invoke("team", 2), timeout=60)["team"]
    lead.crash.invoke()
    wait_for(lambda: group_rows(four_cpus) == {}, timeout=30, what="the group to be removed")
    assert held(four_cpus) == {}
    wait_for(lambda: all_dead(team), timeout=30, what="the team to exit")


def test_an_instance_waiting_on_its_group_gets_the_arithmetic(four_cpus):
    yr.create_resource_group([BUNDLE] * 3, name="first")
    lead = TeamLead.invoke()
    reason = yr.get(lead.reserve.invoke("second", 1000, 1), timeout=60)
    assert "'second' was not admitted within 1 s" in reason
    assert "only 900m of the local runtime's 4000m is free" in reason


def test_an_instance_placing_in_an_unknown_group_gets_the_error(four_cpus):
    lead = TeamLead.invoke()
    with pytest.raises(ValueError, match="no resource group 'nowhere'"):
        yr.get(lead.place_in.invoke("nowhere", 0), timeout=60)


def test_an_instance_removes_a_group_the_driver_made(four_cpus):
    yr.create_resource_group([BUNDLE], name="team").wait(30)
    lead = TeamLead.invoke()
    yr.get(lead.remove.invoke("team"), timeout=60)
    assert group_rows(four_cpus) == {}


def _catch(errors: list[BaseException], work) -> None:
    try:
        work()
    except BaseException as error:
        errors.append(error)
