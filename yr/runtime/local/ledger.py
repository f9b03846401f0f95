"""The local capacity ledger: who holds how many millicores and custom resources of the machine.

CPU is a logical resource in millicores; custom resources (``yr.Config(resources=...)``, e.g.
``{"nvidia.com/gpu": 2}``) are counted the same way, so a request nobody can satisfy is refused
with the same arithmetic as a too-large CPU request.
"""

from __future__ import annotations

from collections.abc import Mapping


class CpuLedger:
    """Millicores and custom resources allocated per instance id, against fixed totals."""

    def __init__(self, total_millicores: int, custom: Mapping[str, float] | None = None) -> None:
        self.total = total_millicores
        self.custom_total: dict[str, float] = dict(custom or {})
        self._held: dict[str, int] = {}
        self._custom_held: dict[str, dict[str, float]] = {}

    @property
    def used(self) -> int:
        return sum(self._held.values())

    @property
    def free(self) -> int:
        return self.total - self.used

    def custom_used(self, name: str) -> float:
        return sum(held.get(name, 0) for held in self._custom_held.values())

    def custom_free(self, name: str) -> float:
        return self.custom_total.get(name, 0) - self.custom_used(name)

    def fits(self, millicores: int, custom: Mapping[str, float] | None = None) -> bool:
        return millicores <= self.free and all(
            amount <= self.custom_free(name) for name, amount in (custom or {}).items()
        )

    def allocate(
        self, holder: str, millicores: int, custom: Mapping[str, float] | None = None
    ) -> None:
        if holder in self._held:
            return
        if not self.fits(millicores, custom):
            raise RuntimeError(f"{holder} does not fit: {millicores}m > {self.free}m free")
        self._held[holder] = millicores
        if custom:
            self._custom_held[holder] = dict(custom)

    def release(self, holder: str) -> None:
        self._held.pop(holder, None)
        self._custom_held.pop(holder, None)

    def holders(self) -> dict[str, int]:
        return dict(self._held)

    def describe_holders(self, *, limit: int = 8) -> str:
        items = sorted(self._held.items(), key=lambda item: (-item[1], item[0]))
        text = ", ".join(f"{holder} {millicores}m" for holder, millicores in items[:limit])
        if len(items) > limit:
            text += f", and {len(items) - limit} more"
        return text or "nobody"

    def never_fits(self, what: str, custom: Mapping[str, float]) -> str | None:
        """Why a custom request exceeds the whole capacity (None if it could ever fit)."""
        for name, amount in sorted(custom.items()):
            total = self.custom_total.get(name, 0)
            if amount > total:
                return (
                    f"{what} requests {name}: {amount:g} but the local runtime's whole capacity "
                    f"is {name}: {total:g}; declare what this machine has with "
                    f"yr.Config(resources={{{name!r}: N}}) or lower "
                    "InvokeOptions(custom_resources=...)"
                )
        return None

    def describe_custom(self, custom: Mapping[str, float]) -> str:
        """The arithmetic of each custom resource a waiting request needs."""
        parts = []
        for name, amount in sorted(custom.items()):
            holders = ", ".join(
                f"{holder} {held[name]:g}"
                for holder, held in sorted(self._custom_held.items())
                if held.get(name)
            )
            parts.append(
                f"{name}: requests {amount:g}, {self.custom_free(name):g} of "
                f"{self.custom_total.get(name, 0):g} free (held by: {holders or 'nobody'})"
            )
        return "; ".join(parts)

    def custom_resources(self) -> dict[str, dict[str, float]]:
        return {
            name: {"total": total, "used": self.custom_used(name), "free": self.custom_free(name)}
            for name, total in sorted(self.custom_total.items())
        }
