"""yr.collective when members die or stay away: errors that name the rank, never a hang."""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import threading
import time

import numpy as np
import pytest

import yr
from tests.collective_members import Member
from tests.test_collective import TRANSPORTS, shm_segments
from yr import collective
from yr.client import shared_memory_prefix
from yr.collective.communicator import Communicator, GroupInfo
from yr.collective.errors import CollectiveError, CollectiveTimeoutError
from yr.collective.mesh import Mesh
from yr.collective.segments import PeerSegmentGone, Segments
from yr.collective.single_copy import SWITCH_ENVIRONMENT_VARIABLE

MiB = 1 << 20
GROUP_TIMEOUT_S = 60.0
# the module (yr.collective's own name ``communicator`` is the function that finds a group)
communicator_module = importlib.import_module("yr.collective.communicator")


@pytest.fixture(params=TRANSPORTS)
def runtime_per_transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """The local runtime, its members reading each other's memory or kept to segments."""
    if request.param == "shared-memory":
        monkeypatch.setenv(SWITCH_ENVIRONMENT_VARIABLE, "0")
    return request.getfixturevalue("local_runtime")


def test_member_killed_during_64_mib_allreduce_fails_every_peer_naming_it(runtime_per_transport):
    members = [Member.invoke() for _ in range(4)]
    collective.create_group(members, name="dp", timeout=GROUP_TIMEOUT_S)
    survivors = [m.allreduce_many.invoke(10_000, 16 * MiB, "dp") for m in members[:3]]
    doomed = members[3].die_in_allreduce.invoke(16 * MiB, "dp")
    with pytest.raises(yr.YRInstanceDiedError):
        yr.get(doomed, timeout=GROUP_TIMEOUT_S)
    started = time.monotonic()
    for ref in survivors:
        with pytest.raises(collective.CollectiveMemberDiedError) as caught:
            yr.get(ref, timeout=GROUP_TIMEOUT_S + 30)  # a hang fails here instead of hanging
        assert caught.value.rank == 3  # the attributes of the remote error, on the local one
        assert "rank 3 died" in str(caught.value) and members[3].instance_id in str(caught.value)
    assert time.monotonic() - started < GROUP_TIMEOUT_S


def test_group_reformed_with_a_replacement_allreduces_correctly(runtime_per_transport):
    members = [Member.invoke() for _ in range(4)]
    collective.create_group(members, name="dp", timeout=GROUP_TIMEOUT_S)
    survivors = [m.allreduce_many.invoke(10_000, 16 * MiB, "dp") for m in members[:3]]
    doomed = members[3].die_in_allreduce.invoke(16 * MiB, "dp")
    for ref in [doomed, *survivors]:
        with pytest.raises(yr.YRError):
            yr.get(ref, timeout=GROUP_TIMEOUT_S + 30)
    members[3] = Member.invoke()
    collective.create_group(members, name="dp", timeout=GROUP_TIMEOUT_S)
    checks = [m.check_allreduce.invoke((16 * MiB,), "float32", "sum", "dp") for m in members]
    assert yr.get(checks, timeout=300) == ["ok"] * 4
    assert shm_segments() == []


def test_a_segment_removed_before_it_is_mapped_names_its_dead_owner():
    """A rank that saw a peer die removes what the peer left; a rank still growing into that
    generation must then hear that the peer died, not a bare FileNotFoundError."""
    where = {"prefix": shared_memory_prefix(os.urandom(8).hex()), "group_id": "g", "world_size": 2}
    survivor, doomed = Segments(rank=0, **where), Segments(rank=1, **where)
    try:
        survivor.create_own(MiB)
        doomed.create_own(MiB)
        survivor.unlink_peer(1)  # what a rank whose exchange saw rank 1 die does
        with pytest.raises(PeerSegmentGone) as caught:
            survivor.map_peers()
        assert caught.value.rank == 1
    finally:
        survivor.close()
        doomed.close()


def test_a_rank_that_cannot_read_a_peer_fails_every_rank_alike(monkeypatch):
    """Two ranks in two threads of this process (so they may read each other), over a real
    mesh: rank 1 announces an input address nothing is mapped at, so rank 0's read fails;
    both ranks must raise the same error at the end of the phase, neither wait for the other."""
    info = GroupInfo(name="g", group_id=os.urandom(8).hex(), member_ids=("a", "b"), timeout=20.0)
    meshes = [
        Mesh(group_name="g", group_id=info.group_id, rank=rank, world_size=2, secret=b"token")
        for rank in range(2)
    ]
    announce = communicator_module.addresses

    def announced(data: np.ndarray, result: np.ndarray) -> np.ndarray:
        where = announce(data, result)
        if threading.current_thread().name == "rank-1":
            where[0] = 8  # the first page of an address space is never mapped
        return where

    monkeypatch.setattr(communicator_module, "addresses", announced)
    outcomes: dict[int, BaseException | None] = {}

    def run(rank: int) -> None:
        try:
            meshes[rank].connect([mesh.address for mesh in meshes], timeout=info.timeout)
            segments = Segments(
                prefix=shared_memory_prefix(info.group_id), group_id="g", rank=rank, world_size=2
            )
            group = Communicator(info, rank, meshes[rank], segments)
            group.allreduce(np.ones(MiB, np.float32), "sum", None)
            outcomes[rank] = None
        except BaseException as error:
            outcomes[rank] = error

    threads = [threading.Thread(target=run, args=(rank,), name=f"rank-{rank}") for rank in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for mesh in meshes:
        mesh.close()
    assert not any(thread.is_alive() for thread in threads)
    for rank in (0, 1):
        assert isinstance(outcomes[rank], CollectiveError), outcomes[rank]
        assert "reduced failed: rank 0: reading process" in str(outcomes[rank])


def test_a_rank_that_stays_away_times_out_naming_it(local_runtime):
    members = [Member.invoke() for _ in range(2)]
    collective.create_group(members, name="pair", timeout=1.0)
    started = time.monotonic()
    with pytest.raises(CollectiveTimeoutError, match=r"rank\(s\) 1 did not take part"):
        yr.get(members[0].barrier_then_count.invoke("pair"), timeout=60)
    assert time.monotonic() - started < 60


def test_a_peer_without_the_session_token_is_refused():
    group = {"group_name": "g", "group_id": "0123456789abcdef", "world_size": 2}
    honest = Mesh(rank=0, secret=b"the session token", **group)
    intruder = Mesh(rank=1, secret=b"a guess", **group)
    outcome: list[BaseException] = []

    def form() -> None:
        try:
            honest.connect([honest.address, intruder.address], timeout=1.0)
        except BaseException as error:
            outcome.append(error)

    former = threading.Thread(target=form)
    former.start()
    with contextlib.suppress(CollectiveError):  # the intruder is refused, or times out
        intruder.connect([honest.address, intruder.address], timeout=1.0)
    former.join(timeout=30)
    assert not former.is_alive()
    honest.close()
    intruder.close()
    assert len(outcome) == 1 and isinstance(outcome[0], CollectiveTimeoutError)


def test_wait_for_death_names_a_worker_killed_without_a_call_in_flight(local_runtime):
    members = [Member.invoke() for _ in range(2)]
    pids = yr.get([m.pid.invoke() for m in members], timeout=60)
    assert collective.wait_for_death(members, timeout=0.5) is None
    os.kill(pids[1], signal.SIGKILL)
    handle, death = collective.wait_for_death(members, timeout=60)
    assert handle == members[1]
    assert death.signal == signal.SIGKILL
