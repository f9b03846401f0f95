"""The member side: the groups this process belongs to, formed by calls from a supervisor.

A supervisor forms a group in two rounds of calls to the hidden method ``CONTROL_METHOD`` (the
instance server routes it here instead of to the user's object): ``listen`` returns this
member's address, ``connect`` hands every member the whole address list (openYuanrong's
server_list) and builds the mesh.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from yr.client import shared_memory_prefix
from yr.collective.communicator import Communicator, GroupInfo
from yr.collective.errors import CollectiveError
from yr.collective.link import GrpcMesh
from yr.collective.mesh import Mesh
from yr.collective.segments import Segments
from yr.protocol import COLLECTIVE_METHOD

CONTROL_METHOD = COLLECTIVE_METHOD

_lock = threading.Lock()
_forming: dict[str, tuple[GroupInfo, int, Mesh]] = {}
_groups: dict[str, Communicator] = {}


def control(action: str, info: GroupInfo, rank: int, addresses: list[str] | None = None) -> Any:
    """The target of ``CONTROL_METHOD`` calls (authenticated by the instance server)."""
    if action == "listen":
        return _listen(info, rank)
    if action == "connect":
        return _connect(info, rank, addresses or [])
    if action == "destroy":
        destroy(info.name, group_id=info.group_id)
        return None
    raise ValueError(f"unknown collective control action {action!r}")


def _runtime() -> tuple[str, bool]:
    """The session token, and whether the members share this machine's memory."""
    from yr import session

    runtime = session.current().runtime
    return runtime.session_token, runtime.shares_memory


def _listen(info: GroupInfo, rank: int) -> str:
    token, shares_memory = _runtime()
    destroy(info.name)  # re-forming under the same name replaces the old group
    where = dict(
        group_name=info.name, group_id=info.group_id, rank=rank, world_size=info.world_size
    )
    if shares_memory:
        mesh: Any = Mesh(secret=token.encode(), **where)
    else:  # a pod: stream to the peers' instance servers (see link.py)
        own = f"{os.environ.get('YR_POD_IP', '127.0.0.1')}:{os.environ.get('YR_PORT', '50051')}"
        from yr import session

        open_channel = session.current().runtime.open_channel  # pinned TLS on Kubernetes
        mesh = GrpcMesh(token=token, own=own, open_channel=open_channel, **where)
    with _lock:
        _forming[info.name] = (info, rank, mesh)
    return mesh.address


def _connect(info: GroupInfo, rank: int, addresses: list[str]) -> bool:
    with _lock:
        forming = _forming.get(info.name)
        if forming is None or forming[0].group_id != info.group_id:
            raise CollectiveError(f"collective group {info.name!r} was not prepared on this member")
        del _forming[info.name]
    mesh = forming[2]
    try:
        mesh.connect(addresses, timeout=info.timeout)
    except BaseException:
        mesh.close()
        raise
    token, shares_memory = _runtime()
    segments = (
        Segments(
            prefix=shared_memory_prefix(token),
            group_id=info.group_id,
            rank=rank,
            world_size=info.world_size,
        )
        if shares_memory
        else None
    )
    with _lock:
        _groups[info.name] = Communicator(info, rank, mesh, segments)
    return True


def destroy(name: str, *, group_id: str | None = None) -> None:
    """Leave a group (peers see end-of-file); nothing if this member is not in it."""
    with _lock:
        group = _groups.get(name)
        if group is not None and group_id in (None, group.info.group_id):
            del _groups[name]
        else:
            group = None
        forming = _forming.pop(name, None)
    if group is not None:
        group.close()
    if forming is not None:
        forming[2].close()


def communicator(name: str) -> Communicator:
    with _lock:
        group = _groups.get(name)
    if group is None:
        raise CollectiveError(
            f"this instance is not a member of collective group {name!r}; a supervisor forms "
            "groups from the handles it holds with yr.collective.create_group(handles, name=...)"
        )
    return group
