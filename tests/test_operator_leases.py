"""Unit tests of driver Lease expiry: when a Lease counts as expired, and retry bookkeeping."""

from __future__ import annotations

import pytest
from yr_operator.cli import parse_args
from yr_operator.leases import Leases, expires_at, grace_seconds, parse_time

T0 = parse_time("2025-01-01T00:00:00Z")


def lease(*, renew: str | None = "2025-01-01T00:00:00.123456Z", rv: str = "1") -> dict:
    spec = {"leaseDurationSeconds": 15}
    if renew:
        spec["renewTime"] = renew
    meta = {"name": "yr-driver-s", "namespace": "ns", "uid": "u", "resourceVersion": rv}
    meta["creationTimestamp"] = "2024-12-31T23:59:00Z"
    return {"metadata": meta, "spec": spec}


def test_micro_and_nano_fractions_parse() -> None:
    assert parse_time("2025-01-01T00:00:00.5Z") == T0 + 0.5
    assert parse_time("2025-01-01T00:00:00.123456789Z") == T0 + 0.123456


def test_lease_expires_at_renew_time_plus_duration() -> None:
    assert expires_at(lease()) == T0 + 0.123456 + 15


def test_lease_never_renewed_expires_from_its_creation() -> None:
    assert expires_at(lease(renew=None)) == T0 - 60 + 15


def names(found: list[dict]) -> list[str]:
    return [x["metadata"]["name"] for x in found]


def test_only_expired_leases_are_due() -> None:
    leases = Leases(grace_s=0)
    leases.observe(event_type="ADDED", body=lease(), now=T0)
    assert leases.due(now=T0 + 15) == []
    assert names(leases.due(now=T0 + 16)) == ["yr-driver-s"]


def test_an_expired_lease_is_due_only_once_the_grace_has_passed_too() -> None:
    leases = Leases(grace_s=5)
    leases.observe(event_type="ADDED", body=lease(), now=T0)
    assert leases.due(now=T0 + 20) == []
    assert names(leases.due(now=T0 + 21)) == ["yr-driver-s"]


def test_a_renewal_stored_late_counts_from_when_it_was_seen_not_from_its_stamp() -> None:
    # A busy API server stored a renewal stamped T0 twelve seconds late.
    leases = Leases(grace_s=0)
    leases.observe(event_type="ADDED", body=lease(renew="2024-12-31T23:59:50Z", rv="1"), now=T0)
    leases.observe(event_type="MODIFIED", body=lease(rv="2"), now=T0 + 12)
    assert leases.due(now=T0 + 26) == []
    assert names(leases.due(now=T0 + 28)) == ["yr-driver-s"]


def test_the_same_lease_seen_again_is_not_a_renewal() -> None:
    leases = Leases(grace_s=0)
    leases.observe(event_type="ADDED", body=lease(rv="1"), now=T0)
    leases.observe(event_type=None, body=lease(rv="1"), now=T0 + 10)  # a relist
    assert names(leases.due(now=T0 + 16)) == ["yr-driver-s"]


def test_attempted_lease_is_not_due_again_until_it_changes() -> None:
    leases = Leases(grace_s=0)
    leases.observe(event_type="ADDED", body=lease(rv="1"), now=T0)
    leases.attempted(leases.due(now=T0 + 16)[0])
    assert leases.due(now=T0 + 16) == []
    leases.observe(event_type="MODIFIED", body=lease(rv="2"), now=T0)
    assert len(leases.due(now=T0 + 16)) == 1


def test_deleted_lease_is_forgotten() -> None:
    leases = Leases(grace_s=0)
    leases.observe(event_type="ADDED", body=lease(), now=T0)
    leases.observe(event_type="DELETED", body=lease(), now=T0)
    assert leases.due(now=T0 + 100) == []


def test_the_grace_is_ten_seconds_unless_yr_lease_grace_seconds_says(monkeypatch) -> None:
    monkeypatch.delenv("YR_LEASE_GRACE_SECONDS", raising=False)
    assert grace_seconds() == 10.0
    monkeypatch.setenv("YR_LEASE_GRACE_SECONDS", "2.5")
    assert grace_seconds() == 2.5


@pytest.mark.parametrize("bad", ["soon", "-1", "inf", "nan"])
def test_a_bad_grace_stops_the_operator_naming_the_variable(monkeypatch, capsys, bad) -> None:
    monkeypatch.setenv("YR_LEASE_GRACE_SECONDS", bad)
    with pytest.raises(SystemExit):
        parse_args([])
    assert f"YR_LEASE_GRACE_SECONDS must be a number of seconds >= 0, got {bad!r}" in (
        capsys.readouterr().err
    )
