"""Named instances as openYuanrong documents them, on the local runtime."""

from __future__ import annotations

import concurrent.futures

import pytest

import yr
from tests.compat_instances import EnvReader, NameLister
from tests.instances import Counter

DEADLINE_S = 60


def _named(name: str, namespace: str = "", **extra) -> yr.InvokeOptions:
    return yr.InvokeOptions(cpu=100, name=name, namespace=namespace, **extra)


def test_creating_a_taken_name_with_get_if_exists_returns_the_existing_instance(local_runtime):
    first = Counter.options(_named("shared")).invoke(5)
    again = Counter.options(_named("shared", get_if_exists=True)).invoke(100)
    assert again == first
    assert yr.get(again.add.invoke(1), timeout=DEADLINE_S) == 6


def test_creating_a_taken_name_without_get_if_exists_is_refused(local_runtime):
    Counter.options(_named("only-one")).invoke()
    with pytest.raises(ValueError, match="an instance named 'only-one' already exists"):
        Counter.options(_named("only-one")).invoke()


def test_get_if_exists_refuses_an_instance_of_another_class(local_runtime):
    Counter.options(_named("taken")).invoke()
    with pytest.raises(ValueError, match="is a tests.instances.Counter, not a"):
        EnvReader.options(_named("taken", get_if_exists=True)).invoke()


def test_get_instance_waits_for_the_name_to_appear(local_runtime):
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        looking = pool.submit(yr.get_instance, "late", "ns", timeout=DEADLINE_S)
        Counter.options(_named("late", "ns")).invoke(7)
        handle = looking.result(timeout=DEADLINE_S + 10)
    assert yr.get(handle.add.invoke(0), timeout=DEADLINE_S) == 7


def test_get_instance_gives_up_after_its_timeout(local_runtime):
    with pytest.raises(yr.YRTimeoutError, match="no instance named 'absent'.*within 0.2 s"):
        yr.get_instance("absent", timeout=0.2)


def test_list_named_instances_shows_namespaced_names_joined_by_a_dash(local_runtime):
    Counter.options(_named("a")).invoke()
    Counter.options(_named("b", "team")).invoke()
    Counter.invoke()  # unnamed: not listed
    assert yr.list_named_instances() == ["a", "team-b"]


def test_an_instance_can_list_the_named_instances(local_runtime):
    Counter.options(_named("seen")).invoke()
    lister = NameLister.invoke()
    assert yr.get(lister.list_named.invoke(), timeout=DEADLINE_S) == ["seen"]


def test_kill_instance_ends_an_instance_by_id(local_runtime):
    counter = Counter.options(_named("doomed")).invoke()
    yr.get(counter.add.invoke(), timeout=DEADLINE_S)
    yr.kill_instance(counter.instance_id)
    with pytest.raises(yr.YRError):
        yr.get(counter.add.invoke(), timeout=DEADLINE_S)
    assert "doomed" not in yr.list_named_instances()
