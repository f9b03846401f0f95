"""The supervisor side: form a group from worker handles, re-form it, destroy it."""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from yr.collective.communicator import GroupInfo
from yr.collective.member import CONTROL_METHOD
from yr.proxies import InstanceHandle

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
DEFAULT_TIMEOUT_S = 60.0
MEMBER_START_S = 300.0  # how long forming waits for members to start (yr.get's default)


@dataclass(frozen=True)
class Group:
    """A formed group, as its creator holds it: members in rank order."""

    info: GroupInfo
    members: tuple[InstanceHandle, ...]

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def world_size(self) -> int:
        return self.info.world_size

    def rank_of(self, member: InstanceHandle) -> int:
        return self.members.index(member)

    def destroy(self) -> None:
        """Ask every live member to leave the group (a dead one has left already)."""
        from yr import get

        refs = [_control(member, "destroy", self.info, rank) for rank, member in enumerate(self)]
        for ref in refs:
            with contextlib.suppress(Exception):  # a dead member has nothing to leave
                get(ref, timeout=self.info.timeout)

    def __iter__(self):
        return iter(self.members)


def create_group(
    members: Sequence[InstanceHandle], *, name: str = "default", timeout: float = DEFAULT_TIMEOUT_S
) -> Group:
    """Form (or re-form) group ``name`` of ``members``: rank i is ``members[i]``.

    Members talk to each other directly; each learns its rank and the world size. Calling it
    again with the same name (say, with a replacement member) replaces the old group.
    """
    from yr import get

    _validate(members, name, timeout)
    info = GroupInfo(
        name=name,
        group_id=secrets.token_hex(8),
        member_ids=tuple(member.instance_id for member in members),
        timeout=float(timeout),
    )
    addresses = get(
        [_control(member, "listen", info, rank) for rank, member in enumerate(members)],
        timeout=max(timeout, MEMBER_START_S),  # members may still be starting
    )
    get(
        [_control(member, "connect", info, rank, addresses) for rank, member in enumerate(members)],
        timeout=timeout + MEMBER_START_S,  # each member gives up after the group's timeout
    )
    return Group(info=info, members=tuple(members))


def _control(member: InstanceHandle, action: str, info: GroupInfo, rank: int, *extra):
    from yr import session

    return session.current().client.submit(
        member.instance_id, member._class_info, CONTROL_METHOD, (action, info, rank, *extra), {}
    )[0]


def _validate(members: Sequence[InstanceHandle], name: str, timeout: float) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"group name must be 1-63 letters, digits, '_', '.' or '-', got {name!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ValueError(f"group timeout must be a positive number of seconds, got {timeout!r}")
    if isinstance(members, InstanceHandle) or not isinstance(members, Sequence) or not members:
        raise TypeError(f"create_group takes a non-empty list of instance handles, got {members!r}")
    for member in members:
        if not isinstance(member, InstanceHandle):
            raise TypeError(f"create_group: {member!r} is not an instance handle")
    ids = [member.instance_id for member in members]
    if len(set(ids)) != len(ids):
        raise ValueError("create_group: the same instance appears twice in the group")
