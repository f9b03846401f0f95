"""Stateless functions (``@yr.invoke``): each call runs in a pooled worker instance.

A worker is an ordinary instance whose only method calls the function, so a function call
takes the same path as a method call (pipeline, batching, ordering, errors, shared memory)
and its CPU comes from the same ledger. Workers are kept and reused for every call of the
same function with the same options; the pool grows, while every worker is busy, up to what
the capacity can hold at once (and no more workers than this machine has cores, since the
calls are meant to be small). Workers wait in the ledger's queue for capacity rather than
failing a schedule timeout: a call that has to wait is queued, not refused.

A worker that dies (killed, out of memory, a crash in the function, terminated) leaves the
pool as soon as the runtime knows: the calls it had been sent fail with the died-error naming
why, as a method call's would (yr does not retry a call: it could run twice), and the calls
made after it go to the other workers or to a new one.
"""

from __future__ import annotations

import inspect
import os
import threading
from typing import Any

from yr import serialization, session
from yr.errors import YRCancelledError
from yr.generators import ObjectRefGenerator
from yr.options import InvokeOptions
from yr.refs import ObjectRef
from yr.runtime.base import ClassInfo, InstanceSpec
from yr.stream_protocol import is_generator

CALL_METHOD = "__call__"
QUEUED_SCHEDULE_TIMEOUT_MS = 86_400_000  # a worker waits for capacity; its calls wait for it


class FunctionWorker:
    """The instance behind a pooled worker: holds the function, runs it per call."""

    def __init__(self, function: Any) -> None:
        self._function = function

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._function(*args, **kwargs)


def invoke(
    function: Any = None,
    *,
    invoke_options: InvokeOptions | None = None,
    return_nums: int | None = None,
) -> Any:
    """Make a function stateless-remote: ``f.invoke(*args)`` returns its ref(s) at once."""
    if invoke_options is not None and not isinstance(invoke_options, InvokeOptions):
        raise TypeError(
            f"invoke_options must be a yr.InvokeOptions, got {type(invoke_options).__name__}"
        )
    count = 1 if return_nums is None else return_nums
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"return_nums must be a positive integer, got {return_nums!r}")

    def decorate(target: Any) -> FunctionProxy:
        if not inspect.isfunction(target) and not inspect.isbuiltin(target):
            raise TypeError(f"@yr.invoke decorates a function, got {target!r}")
        return FunctionProxy(target, (invoke_options or InvokeOptions()).checked(), count)

    return decorate(function) if function is not None else decorate


class FunctionProxy:
    """What ``@yr.invoke`` turns a function into."""

    def __init__(self, function: Any, options: InvokeOptions, return_nums: int) -> None:
        self._function = function
        self._options = options
        self._return_nums = return_nums
        self.__doc__ = function.__doc__
        self.__name__ = function.__name__
        self.__qualname__ = function.__qualname__
        self.__module__ = function.__module__
        try:
            self._signature: inspect.Signature | None = inspect.signature(function)
        except (TypeError, ValueError):
            self._signature = None

    def options(self, invoke_options: InvokeOptions) -> FunctionProxy:
        """A proxy whose calls run with ``invoke_options`` (workers of their own)."""
        if not isinstance(invoke_options, InvokeOptions):
            raise TypeError(
                f"options() takes a yr.InvokeOptions, got {type(invoke_options).__name__}"
            )
        return FunctionProxy(self._function, invoke_options.checked(), self._return_nums)

    def invoke(self, *args: Any, **kwargs: Any) -> ObjectRef | list[ObjectRef]:
        if self._signature is not None:
            try:
                self._signature.bind(*args, **kwargs)
            except TypeError as error:
                raise TypeError(f"{self.__name__}(): {error}") from None
        current = session.current()
        pool = _pool_for(current, self._function, self._options, self._return_nums)
        instance_id = pool.pick()
        streaming = is_generator(self._function)
        refs = current.client.submit(
            instance_id,
            pool.class_info,
            CALL_METHOD,
            args,
            kwargs,
            return_nums=1 if streaming else self._return_nums,
        )
        pool.track(instance_id, refs)
        if streaming:
            return ObjectRefGenerator(instance_id, pool.class_info, refs[0])
        return refs[0] if self._return_nums == 1 else refs

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"{self.__name__} is a yr stateless function: call it with "
            f"{self.__name__}.invoke(...), then yr.get the ref"
        )

    def __repr__(self) -> str:
        return f"<yr.invoke {self.__module__}.{self.__qualname__} {self._options}>"


class WorkerPool:
    """The worker instances of one function with one set of options, in one process."""

    def __init__(self, current: Any, function: Any, options: InvokeOptions, return_nums: int):
        self._session = current
        self.class_info = ClassInfo(
            class_name=f"{function.__module__}.{function.__qualname__}",
            method_meta={CALL_METHOD: return_nums},
        )
        self._spec = InstanceSpec(
            class_info=self.class_info,
            payload=_payload(function),
            options=options.merged(schedule_timeout_ms=QUEUED_SCHEDULE_TIMEOUT_MS),
        )
        self._limit = _worker_limit(current.runtime, options.cpu)
        self._lock = threading.Lock()
        self._outstanding: dict[str, int] = {}  # worker -> its calls not settled yet
        # Workers that will never run again. Filled by the runtime's callbacks, which may run
        # under the runtime's lock: a lock of its own, never held while calling the runtime.
        self._gone_lock = threading.Lock()
        self._gone: set[str] = set()

    def pick(self) -> str:
        """The least busy worker; a new one while all are busy and the pool may grow."""
        with self._lock:
            with self._gone_lock:
                gone, self._gone = self._gone, set()
            for worker in gone:
                self._outstanding.pop(worker, None)
            idle = [worker for worker, count in self._outstanding.items() if count == 0]
            if idle:
                worker = idle[0]
            elif len(self._outstanding) < self._limit:
                worker = self._session.runtime.create(self._spec, owner_id=self._session.owner_id)
                self._watch_end(worker)
            else:
                worker = min(self._outstanding, key=self._outstanding.__getitem__)
            self._outstanding[worker] = self._outstanding.get(worker, 0) + 1
            return worker

    def _watch_end(self, worker: str) -> None:
        """Drop ``worker`` from the pool once, having started, it will never run again.

        A worker that never started (its function cannot load there, say) stays: its calls
        fail with that error rather than each starting another worker that fails the same
        way. A new worker, not a restart of the dead one: no later call is sent down a
        connection to the dead process. No incarnation reaches ``beyond_last`` (there are
        fewer restarts), so that future can only end in the error saying the worker is gone;
        it holds no thread.
        """
        runtime = self._session.runtime
        beyond_last = self._spec.options.recover_retry_times + 1

        def ended(_future: Any) -> None:
            with self._gone_lock:
                self._gone.add(worker)

        def started(first: Any) -> None:
            if first.exception() is None:
                runtime.endpoint(worker, min_incarnation=beyond_last).add_done_callback(ended)

        runtime.endpoint(worker).add_done_callback(started)

    def track(self, worker: str, refs: list[ObjectRef]) -> None:
        def settled(_future: Any) -> None:
            with self._lock:
                if worker in self._outstanding:
                    self._outstanding[worker] -= 1

        if refs:
            refs[0].future.add_done_callback(settled)
        else:
            settled(None)


def _payload(function: Any) -> bytes:
    try:
        return serialization.dumps((FunctionWorker, (function,), {}))
    except Exception:
        serialization.dumps_named(function, what=f"function {function.__qualname__}")
        raise


def _worker_limit(runtime: Any, cpu: int) -> int:
    """How many workers may run at once: what the capacity holds, at most one per core."""
    cores = os.cpu_count() or 1
    try:
        allocatable = sum(node["allocatable"]["CPU"] for node in runtime.resources())
    except Exception:  # a runtime that may not read capacity (e.g. no RBAC on nodes)
        return cores
    return max(1, min(cores, int(allocatable // cpu)))


_pools_lock = threading.Lock()
_pools: dict[tuple[int, Any, str, int], WorkerPool] = {}


def _pool_for(current: Any, function: Any, options: InvokeOptions, return_nums: int) -> WorkerPool:
    key = (id(current), function, repr(options), return_nums)
    pool = _pools.get(key)
    if pool is not None:
        return pool
    with _pools_lock:
        stale = [k for k, p in _pools.items() if p._session is not current]
        for k in stale:  # pools of a finalized session: its workers are gone
            del _pools[k]
        pool = _pools.get(key)
        if pool is None:
            pool = WorkerPool(current, function, options, return_nums)
            _pools[key] = pool
        return pool


def cancel(
    obj_refs: ObjectRef | list[ObjectRef], allow_force: bool = True, allow_recursive: bool = False
) -> None:
    """Withdraw calls that have not started: their refs raise ``YRCancelledError``.

    A call already sent to its worker runs to completion (``allow_force`` and
    ``allow_recursive`` are accepted for openYuanrong code and change nothing); a ready ref,
    or one of a method call already sent, is left as it is, without error.
    """
    refs = [obj_refs] if isinstance(obj_refs, ObjectRef) else obj_refs
    if not isinstance(refs, list | tuple) or not all(isinstance(r, ObjectRef) for r in refs):
        raise TypeError(f"yr.cancel() takes an ObjectRef or a list of them, got {obj_refs!r:.80}")
    for name, flag in (("allow_force", allow_force), ("allow_recursive", allow_recursive)):
        if not isinstance(flag, bool):
            raise TypeError(f"yr.cancel() {name} must be a bool, got {flag!r}")
    client = session.current().client
    for ref in refs:
        if not ref.done():
            client.cancel(
                ref, YRCancelledError(f"yr.cancel() withdrew call {ref.id} before it ran")
            )
