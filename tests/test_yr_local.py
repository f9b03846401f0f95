"""The `yr` command against a live local session: list, tree, stack and logs."""

from __future__ import annotations

import pytest

import yr
from tests.observe_instances import Leaf, Top
from tests.support import wait_for
from tests.yr_cli_support import (
    OBSERVED_FACTS,
    flatten,
    observed_facts,
    private_session,
    run_yr,
    yr_json,
)

__all__ = ["private_session"]


@pytest.fixture
def observed_tree(private_session):
    """Driver -> Top -> (Middle -> Leaf, Doomed): Middle blocked in yr.get on Leaf, Doomed dead."""
    top = Top.invoke()
    ids = yr.get(top.ids.invoke())
    yr.get(top.kill_doomed.invoke())
    yr.get(top.start_blocking.invoke())
    return {"top": top.instance_id, **ids}


def test_yr_list_shows_each_instance_with_class_state_owner(observed_tree):
    rows = yr_json("list")["instances"]
    assert len(rows) == len(observed_tree)
    assert observed_facts(rows, observed_tree) == OBSERVED_FACTS
    assert {row["cpu"] for row in rows} == {100}


def test_yr_list_table_names_the_dead_with_its_exit_code(observed_tree):
    done = run_yr("list")
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if observed_tree["doomed"] in line)
    assert "dead (exited with code 3" in line


def test_yr_tree_json_nests_the_tree_three_deep(observed_tree):
    (session,) = yr_json("tree")["sessions"]
    nodes = flatten(session["tree"])
    assert nodes[observed_tree["top"]]["depth"] == 1
    assert nodes[observed_tree["middle"]]["depth"] == 2
    assert nodes[observed_tree["leaf"]]["depth"] == 3
    assert nodes[observed_tree["doomed"]]["state"] == "dead"
    assert "exited with code 3" in nodes[observed_tree["doomed"]]["reason"]


def test_yr_logs_shows_what_a_dead_instance_printed_last(observed_tree):
    done = run_yr("logs", observed_tree["doomed"])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-2:] == ["last words 29", "exiting with code 3"]


def test_yr_logs_of_an_unknown_instance_is_a_clear_error(observed_tree):
    done = run_yr("logs", "no-such-instance")
    assert done.returncode == 1
    assert "no instance 'no-such-instance'" in done.stderr


def test_yr_stack_shows_the_sleep_frame_of_user_code(private_session):
    leaf = Leaf.invoke()
    leaf.doze.invoke()

    def dozing_stack() -> str | None:
        done = run_yr("stack", leaf.instance_id)
        return done.stdout if "in doze" in done.stdout else None

    stack = wait_for(dozing_stack, timeout=30, what="the leaf's stack to show doze")
    doze_at = stack.index("in doze")
    assert "time.sleep(600)" in stack[doze_at:]


def test_yr_with_no_command_shows_the_tree_of_every_live_session(observed_tree):
    done = run_yr()
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("driver pid=")
    assert f"└── {observed_tree['top']} (Top) ready" in done.stdout
