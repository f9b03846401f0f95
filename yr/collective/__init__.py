"""Collective communication among instances: allreduce, broadcast, allgather, barrier.

A supervisor forms a group from worker handles it holds (``create_group``); inside the members,
the functions below run the same operation on every rank, peer to peer. A member that dies
makes every peer's pending operation raise ``CollectiveMemberDiedError`` naming its rank.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from yr.collective.communicator import GroupInfo, ReduceOp
from yr.collective.errors import (
    CollectiveError,
    CollectiveMemberDiedError,
    CollectiveMismatchError,
    CollectiveTimeoutError,
)
from yr.collective.group import Group, create_group
from yr.collective.healing import MembersDiedError, gather, heal, wait_for_death
from yr.collective.member import communicator, destroy


def allreduce(
    array: np.ndarray,
    group_name: str = "default",
    op: ReduceOp | str = ReduceOp.SUM,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Reduce ``array`` across the group; every rank gets the result (in ``out`` if given)."""
    return communicator(group_name).allreduce(array, op, out)


def broadcast(
    array: np.ndarray, src: int = 0, group_name: str = "default", out: np.ndarray | None = None
) -> np.ndarray:
    """Every rank gets rank ``src``'s array (others pass an array of the same shape/dtype)."""
    return communicator(group_name).broadcast(array, src, out)


def allgather(
    array: np.ndarray, group_name: str = "default", out: np.ndarray | None = None
) -> np.ndarray:
    """Every rank gets all ranks' arrays stacked in rank order: shape (world_size, *shape)."""
    return communicator(group_name).allgather(array, out)


def barrier(group_name: str = "default") -> None:
    """Return once every rank of the group has called ``barrier``."""
    communicator(group_name).barrier()


def get_rank(group_name: str = "default") -> int:
    return communicator(group_name).rank


def get_world_size(group_name: str = "default") -> int:
    return communicator(group_name).world_size


def destroy_group(group_name: str = "default") -> None:
    """Leave a group from inside a member (a supervisor calls ``Group.destroy``)."""
    destroy(group_name)


def member_call(action: str, *args: Any) -> Any:
    """Where the instance server routes the group-forming calls (see member.CONTROL_METHOD)."""
    from yr.collective.member import control

    return control(action, *args)


__all__ = [
    "CollectiveError",
    "CollectiveMemberDiedError",
    "CollectiveMismatchError",
    "CollectiveTimeoutError",
    "Group",
    "GroupInfo",
    "MembersDiedError",
    "ReduceOp",
    "allgather",
    "allreduce",
    "barrier",
    "broadcast",
    "create_group",
    "destroy_group",
    "gather",
    "get_rank",
    "get_world_size",
    "heal",
    "wait_for_death",
]
