"""How a generator's items travel: one ordinary call per item, on the method call path.

A method (or stateless function) that is a generator returns, for its first call, the id
under which the instance keeps the running generator; the caller then asks for each item
with a ``NEXT_METHOD`` call naming that id, which answers the next yielded value, or
``StreamEnd`` once the generator is exhausted. An exception raised by the generator answers
the call for the item where it happened.
"""

from __future__ import annotations

import inspect
import itertools
import threading
from typing import Any

NEXT_METHOD = "__yr_next__"


class StreamEnd:
    """The generator is exhausted: no more items."""


class GeneratorStore:
    """The generators an instance is running for its callers, by id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._running: dict[int, Any] = {}

    def keep(self, generator: Any) -> int:
        with self._lock:
            generator_id = next(self._ids)
            self._running[generator_id] = generator
            return generator_id

    def next_item(self, generator_id: int, run_awaitable: Any) -> Any:
        """The next item, or ``StreamEnd``; an error ends the generator and propagates."""
        with self._lock:
            generator = self._running.get(generator_id)
        if generator is None:
            return StreamEnd()
        try:
            if inspect.isasyncgen(generator):
                return run_awaitable(generator.__anext__())
            return next(generator)
        except (StopIteration, StopAsyncIteration):
            self._forget(generator_id)
            return StreamEnd()
        except BaseException:
            self._forget(generator_id)
            raise

    def _forget(self, generator_id: int) -> None:
        with self._lock:
            self._running.pop(generator_id, None)


def is_generator(target: Any) -> bool:
    return inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target)
