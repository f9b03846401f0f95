"""The errors a collective raises, each naming the group and the rank at fault."""

from __future__ import annotations

from yr.errors import YRError, YRTimeoutError


class CollectiveError(YRError):
    """A collective operation could not complete; the group must be re-formed to go on."""


class CollectiveMemberDiedError(CollectiveError):
    """A peer of the group died while (or before) this rank needed it."""

    def __init__(self, group_name: str, rank: int, detail: str = "") -> None:
        self.group_name = group_name
        self.rank = rank
        self.detail = detail
        why = f": {detail}" if detail else ""
        super().__init__(
            f"collective group {group_name!r}: rank {rank} died{why}; "
            "re-form the group (yr.collective.create_group) with a replacement member"
        )

    def __reduce__(self):
        return (CollectiveMemberDiedError, (self.group_name, self.rank, self.detail))


class CollectiveTimeoutError(CollectiveError, YRTimeoutError):
    """Some peers did not take part in an operation within the group's timeout."""

    def __init__(self, group_name: str, missing_ranks: list[int], timeout: float) -> None:
        self.group_name = group_name
        self.missing_ranks = list(missing_ranks)
        self.timeout = timeout
        super().__init__(
            f"collective group {group_name!r}: rank(s) {', '.join(map(str, missing_ranks))} "
            f"did not take part within the group's timeout of {timeout:g} s"
        )

    def __reduce__(self):
        return (CollectiveTimeoutError, (self.group_name, self.missing_ranks, self.timeout))


class CollectiveMismatchError(CollectiveError, ValueError):
    """The ranks called different operations, or with arrays of different shape or dtype."""
