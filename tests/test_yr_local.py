"""The `yr` command against a live local session: list, tree, stack and logs."""

from __future__ import annotations

import contextlib
import subprocess
import sys

import pytest

import yr
from tests.observe_instances import Leaf, Talker, Top
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


def test_yr_logs_follow_prints_new_lines_until_the_instance_dies(private_session):
    talker = Talker.invoke()
    yr.get(talker.say.invoke("before following"))
    follower = subprocess.Popen(
        [sys.executable, "-m", "yr.cli", "logs", "-f", talker.instance_id],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout.readline() == "before following\n"
        with contextlib.suppress(yr.YRError):
            yr.get(talker.say_and_die.invoke("last line"))
        out, _ = follower.communicate(timeout=60)  # it ends by itself once the instance died
        assert out == "last line\n"
        assert follower.returncode == 0
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()


def test_yr_list_names_why_an_instance_is_pending(private_session):
    Leaf.options(yr.InvokeOptions(cpu=16000)).invoke()  # the whole capacity
    waiting = Leaf.options(yr.InvokeOptions(cpu=1000)).invoke()
    rows = {row["id"]: row for row in yr_json("list")["instances"]}
    assert rows[waiting.instance_id]["state"] == "pending"
    assert rows[waiting.instance_id]["reason"] == "waiting for 1000m CPU: 0m of 16000m free"
