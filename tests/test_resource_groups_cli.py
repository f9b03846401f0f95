"""The `yr` command shows a local session's resource groups and who is placed in them."""

from __future__ import annotations

import yr
from tests.group_instances import Member, in_group
from tests.yr_cli_support import private_session, run_yr, yr_json

__all__ = ["private_session"]

BUNDLE = {"CPU": 1000, "Memory": 500}


def test_yr_tree_shows_each_group_with_its_state_and_members(private_session):
    yr.create_resource_group([BUNDLE, BUNDLE], name="team").wait(30)
    member = Member.options(in_group("team", 1)).invoke()
    yr.get(member.pid.invoke())
    done = run_yr("tree")
    assert done.returncode == 0, done.stderr
    assert (
        "resource group team (PACK) admitted: 2 bundle(s), 2000m CPU, owner driver, "
        f"members: {member.instance_id}@1"
    ) in done.stdout
    (session,) = yr_json("tree")["sessions"]
    assert [group["name"] for group in session["resource_groups"]] == ["team"]


def test_yr_list_names_the_group_an_instance_is_placed_in(private_session):
    yr.create_resource_group([BUNDLE], name="team").wait(30)
    member = Member.options(in_group("team", 0)).invoke()
    yr.get(member.pid.invoke())
    rows = {row["id"]: row for row in yr_json("list")["instances"]}
    assert rows[member.instance_id]["resource_group"] == "team"
