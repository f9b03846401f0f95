"""openYuanrong's ``yr.put`` parameter object (``CreateParam``) and its enums, accepted as such.

openYuanrong stores a put value in its data system, tuned by these. yr keeps the value with
the ref and sends it with the calls it is passed to (large buffers through shared memory), so
there is nothing to tune: a non-default setting is accepted and warned about once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields

from yr import ignored_options


class WriteMode(enum.IntEnum):
    NONE_L2_CACHE = 0
    WRITE_THROUGH_L2_CACHE = 1
    WRITE_BACK_L2_CACHE = 2
    NONE_L2_CACHE_EVICT = 3


class ConsistencyType(enum.IntEnum):
    PRAM = 0
    CAUSAL = 1


class CacheType(enum.IntEnum):
    MEMORY = 0
    DISK = 1


_WHY = "yr has no data system: a put value travels with the calls it is passed to"


@dataclass
class CreateParam:
    """How openYuanrong's data system stores a put value (no effect in yr)."""

    write_mode: WriteMode = WriteMode.NONE_L2_CACHE
    consistency_type: ConsistencyType = ConsistencyType.PRAM
    cache_type: CacheType = CacheType.MEMORY

    def check(self) -> None:
        """Refuse a value of the wrong kind; warn once for a setting that changes nothing."""
        for f in fields(self):
            value = getattr(self, f.name)
            kind = type(f.default)
            if isinstance(value, bool) or not isinstance(value, int) or value not in set(kind):
                raise ValueError(
                    f"CreateParam.{f.name} must be a yr.{kind.__name__}, got {value!r}"
                )
            if value != f.default:
                ignored_options.warn_once("CreateParam", f.name, _WHY)
