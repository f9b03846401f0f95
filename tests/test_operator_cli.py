"""The `yr-operator` command line: which namespaces it watches and how it peers."""

from __future__ import annotations

import pytest
from yr_operator.cli import parse_args


def test_all_namespaces_flag_watches_the_whole_cluster() -> None:
    args = parse_args(["-A"])
    assert args.all_namespaces and args.namespace == []


def test_namespace_flag_is_repeatable() -> None:
    assert parse_args(["-n", "a", "-n", "b"]).namespace == ["a", "b"]


def test_all_namespaces_and_a_namespace_exclude_each_other() -> None:
    with pytest.raises(SystemExit):
        parse_args(["-A", "-n", "a"])


def test_standalone_is_the_default_and_can_be_turned_off() -> None:
    assert parse_args([]).standalone is True
    assert parse_args(["--no-standalone"]).standalone is False


def test_liveness_and_verbose_are_passed_through() -> None:
    args = parse_args(["--liveness", "http://127.0.0.1:8080/healthz", "--verbose"])
    assert (args.liveness, args.verbose) == ("http://127.0.0.1:8080/healthz", True)
