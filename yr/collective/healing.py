"""What a supervisor needs to heal a group: which ranks died, their replacement, the new group.

The design (small on purpose): the supervisor holds the checkpoint (for training: the weights
and the step of the last segment every rank finished) and runs the members in segments of
steps. When a segment fails because members died, ``gather`` names the dead ranks, ``heal``
replaces them and re-forms the group, and the supervisor re-runs the segment from its
checkpoint. A supervisor with no call in flight can learn of a death with ``wait_for_death``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from yr.collective.errors import CollectiveError, CollectiveMemberDiedError
from yr.collective.group import Group, create_group
from yr.errors import DeathInfo, YRInstanceDiedError
from yr.proxies import InstanceHandle
from yr.refs import ObjectRef


class MembersDiedError(CollectiveError):
    """One call per rank failed because these ranks died; ``heal`` the group and retry."""

    def __init__(self, group_name: str, dead_ranks: list[int], detail: str = "") -> None:
        self.group_name = group_name
        self.dead_ranks = list(dead_ranks)
        self.detail = detail
        super().__init__(
            f"collective group {group_name!r}: rank(s) {', '.join(map(str, dead_ranks))} "
            f"died{': ' + detail if detail else ''}"
        )

    def __reduce__(self):
        return (MembersDiedError, (self.group_name, self.dead_ranks, self.detail))


def gather(group: Group, refs: Sequence[ObjectRef], *, timeout: float = 300) -> list[Any]:
    """The results of one call per rank; ``MembersDiedError`` naming the dead ranks if any died.

    Waits for every call, even after one failed, so no member is left mid-call when the
    supervisor re-forms the group.
    """
    from yr import get

    results: list[Any] = []
    dead: dict[int, str] = {}
    failure: BaseException | None = None
    for rank, ref in enumerate(refs):
        try:
            results.append(get(ref, timeout=timeout))
        except YRInstanceDiedError as error:
            dead[rank] = str(error)
        except CollectiveMemberDiedError as error:  # dual-typed: the cause holds the rank
            cause = getattr(error, "cause", error)
            dead.setdefault(cause.rank, str(cause))
        except BaseException as error:
            failure = failure or error
    if dead:
        raise MembersDiedError(group.name, sorted(dead), dead[min(dead)])
    if failure is not None:
        raise failure
    return results


def heal(
    group: Group, dead_ranks: Sequence[int], replace: Callable[[int], InstanceHandle]
) -> Group:
    """Replace each dead rank with ``replace(rank)`` and re-form the group under its name."""
    members = list(group.members)
    for rank in dead_ranks:
        with contextlib.suppress(Exception):  # it is dead: make sure its record is gone too
            members[rank].terminate()
        members[rank] = replace(rank)
    return create_group(members, name=group.name, timeout=group.info.timeout)


def wait_for_death(
    handles: Sequence[InstanceHandle], *, timeout: float
) -> tuple[InstanceHandle, DeathInfo] | None:
    """The first of ``handles`` to die within ``timeout`` and how, or None if all lived."""
    from yr import session

    runtime = session.current().runtime

    def watch(handle: InstanceHandle) -> tuple[InstanceHandle, DeathInfo] | None:
        try:
            endpoint = runtime.endpoint(handle.instance_id).result(timeout=timeout)
        except YRInstanceDiedError as error:  # it died before we started watching
            return handle, error.death
        incarnation = endpoint.incarnation
        death = runtime.await_death(handle.instance_id, incarnation, timeout=timeout)
        return (handle, death) if death is not None else None

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(len(handles), 1))
    try:
        pending = {pool.submit(watch, handle) for handle in handles}
        while pending:
            done, pending = concurrent.futures.wait(
                pending, return_when=concurrent.futures.FIRST_COMPLETED
            )
            for future in done:
                with contextlib.suppress(Exception):
                    found = future.result()
                    if found is not None:
                        return found
        return None
    finally:  # the other watchers end by their own timeout; do not wait for them
        pool.shutdown(wait=False)
