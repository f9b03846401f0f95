"""The logical CPU ledger: who holds how many millicores of the local capacity."""

from __future__ import annotations


class CpuLedger:
    """Millicores allocated per instance id, against a fixed total."""

    def __init__(self, total_millicores: int) -> None:
        self.total = total_millicores
        self._held: dict[str, int] = {}

    @property
    def used(self) -> int:
        return sum(self._held.values())

    @property
    def free(self) -> int:
        return self.total - self.used

    def fits(self, millicores: int) -> bool:
        return millicores <= self.free

    def allocate(self, holder: str, millicores: int) -> None:
        if holder in self._held:
            return
        if not self.fits(millicores):
            raise RuntimeError(f"{holder} does not fit: {millicores}m > {self.free}m free")
        self._held[holder] = millicores

    def release(self, holder: str) -> None:
        self._held.pop(holder, None)

    def holders(self) -> dict[str, int]:
        return dict(self._held)

    def describe_holders(self, *, limit: int = 8) -> str:
        items = sorted(self._held.items(), key=lambda item: (-item[1], item[0]))
        text = ", ".join(f"{holder} {millicores}m" for holder, millicores in items[:limit])
        if len(items) > limit:
            text += f", and {len(items) - limit} more"
        return text or "nobody"
