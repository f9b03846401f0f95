"""ObjectRef and the functions that wait on refs: ``get``, ``wait`` and ``put``."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures._base import CANCELLED as _CANCELLED
from concurrent.futures._base import CANCELLED_AND_NOTIFIED as _CANCELLED_AND_NOTIFIED
from concurrent.futures._base import FINISHED as _FINISHED
from typing import Any

from yr import waits
from yr.errors import YRTimeoutError
from yr.put_params import CreateParam

DEFAULT_GET_TIMEOUT_S = 300.0
# How often a waiting yr.get / yr.wait wakes, so that Ctrl-C always reaches it.
WAIT_SLICE_S = 0.2
_ids = itertools.count()
_pickling = threading.local()  # .pending: a list while call arguments are being pickled
_pid = os.getpid()  # refs made after a fork are named after the child


class _RefFuture(concurrent.futures.Future):
    """A ref's future, whose ``done()`` and settled ``result()`` take no lock: one sync call
    asks several times, and each lock round trip is Python code in ``threading``.

    Safe because a future's ``_state`` only moves forward, to a final state, under its lock,
    after its result is stored: read without the lock it can only be late, and every waiter
    still checks it again under the lock."""

    def done(self) -> bool:
        return self._state in _FINAL_STATES

    def result(self, timeout: float | None = None) -> Any:
        if self._state == _FINISHED and self._exception is None:
            return self._result
        return super().result(timeout)


_FINAL_STATES = frozenset({_CANCELLED, _CANCELLED_AND_NOTIFIED, _FINISHED})


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


class ObjectRef:
    """A future result of a method call (or a value given to ``yr.put``).

    A ref passed as an argument, or pickled into another process, travels as its value: it is
    resolved first, so the receiving method sees a ready ref.
    """

    __slots__ = ("_flush", "_future", "_id", "_origin")

    def __init__(
        self,
        future: concurrent.futures.Future | None = None,
        *,
        flush: Callable[..., None] | None = None,
        origin: tuple[str, str] | None = None,
    ) -> None:
        self._future: concurrent.futures.Future = future or _RefFuture()
        self._id: str | int = next(_ids)  # made a string (with the pid) when first asked
        self._flush = flush  # sends the call now; yr.get calls it before waiting, and to wait
        self._origin = origin  # (instance id, method) of the call behind it

    def _request(self, *, wait: bool = False, deadline: float | None = None) -> None:
        """Send the call behind this ref now. With ``wait``, the calling thread waits for
        this ref alone until ``deadline`` (monotonic; None: forever) and may read its reply
        itself; it returns early if another thread reads it."""
        flush = self._flush
        if flush is not None and not self._future.done():
            flush(self, wait=wait, deadline=deadline)

    @classmethod
    def ready(cls, value: Any) -> ObjectRef:
        ref = cls()
        ref._future.set_result(value)
        return ref

    @classmethod
    def failed(cls, error: BaseException) -> ObjectRef:
        ref = cls()
        ref._future.set_exception(error)
        return ref

    @property
    def id(self) -> str:
        if isinstance(self._id, int):  # formatted on demand: invoke() makes refs by thousands
            self._id = f"{_pid:x}-{self._id:x}"
        return self._id

    @property
    def future(self) -> concurrent.futures.Future:
        return self._future

    def done(self) -> bool:
        return self._future.done()

    def result(self, timeout: float | None = None) -> Any:
        _refuse_waiting_on_self([self])
        self._request()
        try:
            return self._future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise YRTimeoutError(
                f"ObjectRef {self.id} was not ready within {timeout:g} s"
            ) from None

    def __await__(self):
        """``await ref`` in an ``async def`` method: waits without blocking the loop."""
        _refuse_waiting_on_self([self])
        self._request()
        return asyncio.wrap_future(self._future).__await__()

    def __repr__(self) -> str:
        state = "ready" if self.done() else "pending"
        return f"ObjectRef({self.id}, {state})"

    def __reduce__(self):
        pending = getattr(_pickling, "pending", None)
        if pending is not None and not self._future.done():
            pending.append(self)  # the call waits for it; this pickle is thrown away
            return (ObjectRef, ())
        self._request()
        future = self._future
        error = future.exception(DEFAULT_GET_TIMEOUT_S)
        if error is not None:
            return (ObjectRef.failed, (error,))
        return (ObjectRef.ready, (future.result(),))


class PendingCollector:
    """While pickling call arguments: pending refs are listed instead of waited for.

    A class rather than a generator context manager: every call goes through it."""

    __slots__ = ("pending",)

    def __enter__(self) -> list[ObjectRef]:
        self.pending: list[ObjectRef] = []
        _pickling.pending = self.pending
        return self.pending

    def __exit__(self, *_: object) -> None:
        _pickling.pending = None


def _validate_timeout(timeout: float | None) -> float | None:
    if timeout is DEFAULT_GET_TIMEOUT_S:
        return timeout
    if timeout is None or timeout == -1:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"timeout must be a number of seconds or -1, got {timeout!r}")
    if math.isnan(timeout):
        raise ValueError("timeout must be a number of seconds or -1, got nan")
    if math.isinf(timeout) and timeout > 0:
        return None  # forever
    if timeout <= 0:
        raise ValueError(
            f"timeout must be a positive number of seconds, or -1 to wait forever; got {timeout}"
        )
    return float(timeout)


def _as_ref_list(refs: Any, *, function: str) -> tuple[list[ObjectRef], bool]:
    if isinstance(refs, ObjectRef):
        return [refs], True
    if isinstance(refs, list | tuple):
        for position, ref in enumerate(refs):
            if not isinstance(ref, ObjectRef):
                raise TypeError(
                    f"yr.{function}() takes an ObjectRef or a list of ObjectRefs; item "
                    f"{position} is a {type(ref).__name__}: {ref!r:.80}"
                )
        return list(refs), False
    raise TypeError(
        f"yr.{function}() takes an ObjectRef or a list of ObjectRefs, "
        f"got a {type(refs).__name__}: {refs!r:.80}"
    )


def get(
    refs: ObjectRef | Sequence[ObjectRef],
    timeout: float | None = DEFAULT_GET_TIMEOUT_S,
    allow_partial: bool = False,
) -> Any:
    """The value of one ref, or the values of a list of refs, waiting at most ``timeout`` s
    (-1: forever). With ``allow_partial``, refs not ready in time read as None instead of
    raising; a call that failed still raises its error."""
    ref_list, single = _as_ref_list(refs, function="get")
    limit = _validate_timeout(timeout)
    if not isinstance(allow_partial, bool):
        raise TypeError(f"allow_partial must be a bool, got {allow_partial!r}")
    if not ref_list:
        return []
    # ref._future.done(), not ref.done(): this runs for every synchronous call
    pending = [ref for ref in ref_list if not ref._future.done()]
    if pending:
        _refuse_waiting_on_self(pending)
        deadline = None if limit is None else time.monotonic() + limit
        with waits.waiting_on([ref._origin for ref in pending if ref._origin]) as waiting:
            report_at = waiting.report_at
            if report_at is None:
                not_done = _wait_until(pending, deadline)
            else:  # a serial instance's wait: reported to the runtime if it lasts
                not_done = _wait_until(
                    pending, min(report_at, math.inf if deadline is None else deadline)
                )
                if not_done and (deadline is None or time.monotonic() < deadline):
                    waiting.report()
                    not_done = _wait_until(not_done, deadline)
        if not_done and not allow_partial:
            count = len(not_done)
            raise YRTimeoutError(
                f"yr.get timed out after {limit:g} s: {count} of {len(ref_list)} ref(s) not ready"
            )
    if single:
        future = ref_list[0]._future
        return future.result() if future.done() else None
    return [ref._future.result() if ref._future.done() else None for ref in ref_list]


def _wait_until(pending: list[ObjectRef], deadline: float | None) -> list[ObjectRef]:
    """Send the calls behind ``pending`` and wait for them until the monotonic ``deadline``
    (None: no limit); those not done by then."""
    if len(pending) == 1:  # a lone call is sent, and its reply read, by this thread
        pending[0]._request(wait=True, deadline=deadline)
        if pending[0]._future.done():
            return []
    else:
        _request_all(pending)
    remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
    _wait_for_futures([ref._future for ref in pending], count=len(pending), timeout=remaining)
    return [ref for ref in pending if not ref._future.done()]


def wait(
    refs: ObjectRef | Sequence[ObjectRef],
    wait_num: int | None = 1,
    timeout: float | None = None,
) -> tuple[list[ObjectRef], list[ObjectRef]]:
    """Wait until ``wait_num`` refs are ready (default 1, as in openYuanrong and Ray) or
    ``timeout`` s pass (None or -1: forever; 0: only look); return (ready, not ready), each in
    the order given, with at most ``wait_num`` refs in the first list."""
    ref_list, _ = _as_ref_list(refs, function="wait")
    if len({id(ref) for ref in ref_list}) != len(ref_list):
        raise ValueError("yr.wait() got the same ObjectRef twice in its list")
    wanted = 1 if wait_num is None else wait_num
    if isinstance(wanted, bool) or not isinstance(wanted, int) or not 0 <= wanted <= len(ref_list):
        raise ValueError(f"wait_num must be an integer between 0 and {len(ref_list)}, got {wanted}")
    limit = 0.0 if timeout == 0 else _validate_timeout(timeout)
    _request_all(ref_list)
    calls = [ref._origin for ref in ref_list if ref._origin and not ref.done()]
    # Seen by `yr tree`; not reported as a wait-for edge (a yr.wait may return with some left).
    with waits.waiting_on(calls, report=False):
        pending = [ref.future for ref in ref_list if not ref.done()]
        needed = wanted - (len(ref_list) - len(pending))
        if needed > 0:
            _wait_for_futures(pending, count=needed, timeout=limit)
    ready = [ref for ref in ref_list if ref.done()][:wanted]
    ready_ids = {id(ref) for ref in ready}
    return ready, [ref for ref in ref_list if id(ref) not in ready_ids]


def _wait_for_futures(
    futures: list[concurrent.futures.Future], *, count: int, timeout: float | None
) -> None:
    """Wait until ``count`` of ``futures`` are done or ``timeout`` s pass, Ctrl-C-able.

    Not ``concurrent.futures.wait``: a Ctrl-C landing while it takes the futures' locks one by
    one leaves some held, and the finalize that follows then blocks settling those futures.
    And never one untimed wait: a SIGINT that the kernel hands to another thread does not wake
    the main thread from a lock wait, so it waits in short slices to let Python raise it."""
    done = threading.Event()
    lock = threading.Lock()
    left = [count]

    def one_done(_: concurrent.futures.Future) -> None:
        with lock:
            left[0] -= 1
            if left[0] <= 0:
                done.set()

    for future in futures:
        future.add_done_callback(one_done)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return
        slice_s = WAIT_SLICE_S if remaining is None else min(remaining, WAIT_SLICE_S)
        if done.wait(slice_s):
            return


def _refuse_waiting_on_self(refs: list[ObjectRef]) -> None:
    """A serial instance waiting for its own call waits forever: the call runs after it."""
    serial = waits.serial_instance()
    if serial is None:
        return  # not an instance's only method thread: it may wait on anything
    for ref in refs:
        if ref._origin is not None and ref._origin[0] == serial and not ref.done():
            waits.refuse_self_wait(*ref._origin)


def _request_all(refs: list[ObjectRef]) -> None:
    """Send the queued calls behind ``refs`` now, before waiting."""
    flushed: set[int] = set()
    for ref in refs:
        flush = ref._flush
        if flush is not None and id(flush) not in flushed and not ref.done():
            flushed.add(id(flush))
            flush(ref)


def put(value: Any, create_param: CreateParam | None = None) -> ObjectRef:
    """A ready ref holding ``value``; it travels with the calls it is passed to.

    ``create_param`` (openYuanrong's data-system settings) is checked and has no effect.
    """
    if isinstance(value, ObjectRef):
        raise TypeError(
            "yr.put() takes a value, not an ObjectRef; wrap it in a list to put the ref itself"
        )
    if create_param is not None:
        if not isinstance(create_param, CreateParam):
            raise TypeError(
                f"yr.put() create_param must be a yr.CreateParam, got {type(create_param).__name__}"
            )
        create_param.check()
    return ObjectRef.ready(value)
