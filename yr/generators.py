"""``ObjectRefGenerator``: what calling a generator method or function returns.

Each ``next()`` asks the instance for the next yielded item (``yr.stream_protocol``) and
returns a ref to it as soon as it is yielded; an exception raised by the generator comes back
as the failed ref of the item where it happened, and ends the iteration.
"""

from __future__ import annotations

from collections.abc import Iterator

from yr import session
from yr.refs import ObjectRef
from yr.runtime.base import ClassInfo
from yr.stream_protocol import NEXT_METHOD, StreamEnd


class ObjectRefGenerator(Iterator[ObjectRef]):
    """Iterate over the refs of a remote generator's items, in the order they are yielded."""

    def __init__(self, instance_id: str, class_info: ClassInfo, started: ObjectRef) -> None:
        self._instance_id = instance_id
        self._class_info = class_info
        self._started = started  # resolves to the generator's id in the instance
        self._finished = False

    def __iter__(self) -> ObjectRefGenerator:
        return self

    def __next__(self) -> ObjectRef:
        if self._finished:
            raise StopIteration
        (item,) = session.current().client.submit(
            self._instance_id, self._class_info, NEXT_METHOD, (self._started,), {}
        )
        try:
            value = item.result(timeout=None)
        except BaseException as error:
            self._finished = True
            return ObjectRef.failed(error)
        if isinstance(value, StreamEnd):
            self._finished = True
            raise StopIteration
        return ObjectRef.ready(value)

    def __repr__(self) -> str:
        state = "finished" if self._finished else "open"
        return f"<ObjectRefGenerator {self._class_info.short_name} {state}>"
