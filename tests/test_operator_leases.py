"""Unit tests of driver Lease expiry: when a Lease counts as expired, and retry bookkeeping."""

from __future__ import annotations

from yr_operator.leases import Leases, expires_at, parse_time

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


def test_only_expired_leases_are_due() -> None:
    leases = Leases()
    leases.observe(event_type="ADDED", body=lease())
    assert leases.due(now=T0 + 15) == []
    assert [x["metadata"]["name"] for x in leases.due(now=T0 + 16)] == ["yr-driver-s"]


def test_attempted_lease_is_not_due_again_until_it_changes() -> None:
    leases = Leases()
    leases.observe(event_type="ADDED", body=lease(rv="1"))
    leases.attempted(leases.due(now=T0 + 16)[0])
    assert leases.due(now=T0 + 16) == []
    leases.observe(event_type="MODIFIED", body=lease(rv="2"))
    assert len(leases.due(now=T0 + 16)) == 1


def test_deleted_lease_is_forgotten() -> None:
    leases = Leases()
    leases.observe(event_type="ADDED", body=lease())
    leases.observe(event_type="DELETED", body=lease())
    assert leases.due(now=T0 + 100) == []
