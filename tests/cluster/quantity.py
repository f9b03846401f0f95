"""Kubernetes resource quantities ("500m", "1.5", "8Gi", "1e3") as numbers."""

from __future__ import annotations

import re
from decimal import Decimal

_SUFFIXES = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")


def parse(quantity: str | int | float) -> Decimal:
    """The value of a quantity in base units (cores, bytes)."""
    text = str(quantity).strip()
    match = _QUANTITY.match(text)
    if not match or match.group(2) not in _SUFFIXES:
        raise ValueError(f"invalid quantity {quantity!r}")
    return Decimal(match.group(1)) * _SUFFIXES[match.group(2)]


def millicores(quantity: str | int | float) -> int:
    """CPU in millicores, rounded up as the scheduler does."""
    return int((parse(quantity) * 1000).to_integral_value(rounding="ROUND_CEILING"))


def bytes_of(quantity: str | int | float) -> int:
    return int(parse(quantity).to_integral_value(rounding="ROUND_CEILING"))
