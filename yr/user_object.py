"""The user's object inside an instance: built from its payload, its methods run on request.

The instance server (yr/server.py) decides when and on which thread; this module only runs a
method and turns what it returned or raised into the ``Outcome`` the caller unpickles.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from yr import segment_pool, serialization, sharedmem, tracebacks
from yr.errors import YRInvokeError
from yr.method_loop import MethodLoop
from yr.protocol import yr_pb2
from yr.refs import ObjectRef
from yr.stream_protocol import NEXT_METHOD, GeneratorStore


class UserObject:
    """Builds the user's object from the payload and runs its methods, in worker threads."""

    def __init__(
        self,
        payload: bytes,
        *,
        class_name: str,
        system_methods: Mapping[str, Callable[..., Any]] | None = None,
        payload_buffers: Sequence[memoryview] = (),
        shm_prefix: str = "",
    ) -> None:
        self.class_name = class_name
        self._shm_prefix = shm_prefix  # this session's segments: where large results may go
        self._payload = payload
        self._buffers = payload_buffers  # its out-of-band buffers (large arguments)
        self._system_methods = dict(system_methods or {})  # reserved names, not user methods
        self.instance: Any = None
        self.init_error: yr_pb2.RemoteError | None = None
        self.method_loop = MethodLoop()  # where its async def methods run
        self.generators = GeneratorStore()  # generators its callers are iterating

    def construct(self) -> None:
        try:
            cls, args, kwargs = serialization.loads(self._payload, buffers=self._buffers)
        except ModuleNotFoundError as error:
            self.init_error = remote_error(error, context=_missing_module(self.class_name, error))
            return
        except BaseException as error:
            self.init_error = remote_error(error, context=f"__init__ of {self.class_name}")
            return
        finally:
            self._payload, self._buffers = b"", ()
        try:
            self.instance = cls(*args, **kwargs)
        except BaseException as error:
            self.init_error = remote_error(error, context=f"__init__ of {self.class_name}")

    def run(self, invocation: yr_pb2.Invocation) -> yr_pb2.Outcome:
        if self.init_error is not None:
            return yr_pb2.Outcome(error=self.init_error)
        received: list[sharedmem.ReceivedBuffers] = []
        outcome = self._run(invocation, received)
        for buffers in received:  # the call's frames are gone: a segment still viewed was kept
            outcome.kept.extend(buffers.close())
        return outcome

    def _run(
        self, invocation: yr_pb2.Invocation, received: list[sharedmem.ReceivedBuffers]
    ) -> yr_pb2.Outcome:
        method = invocation.method
        try:
            target = (
                None
                if method == NEXT_METHOD
                else self._system_methods.get(method) or getattr(self.instance, method)
            )
            buffers = None
            if invocation.buffers:
                received.append(
                    sharedmem.ReceivedBuffers(invocation.buffers, invocation.buffer_sizes)
                )
                buffers = received[-1].views
            args, kwargs = serialization.loads(invocation.arguments, buffers=buffers)
            del buffers  # only the unpickled values may keep a segment mapped
            if args:
                args = resolve_refs(args)
            if kwargs:
                kwargs = dict(zip(kwargs, resolve_refs(kwargs.values()), strict=True))
            if method == NEXT_METHOD:
                result = self.generators.next_item(args[0], self.method_loop.run)
            else:
                result = target(*args, **kwargs)  # type: ignore[misc]
            if type(result) in _NEVER_SHARED:  # the common plain result: nothing to await
                pass
            elif inspect.isawaitable(result):
                result = self.method_loop.run(result)
            elif inspect.isgenerator(result) or inspect.isasyncgen(result):
                result = self.generators.keep(result)
        except BaseException as error:
            return yr_pb2.Outcome(error=remote_error(error))
        return self._returned(result, method, invocation.results_in_shared_memory)

    def _returned(self, result: Any, method: str, shared_memory: bool) -> yr_pb2.Outcome:
        """The outcome carrying ``result``: its large buffers through shared memory when the
        caller maps this session's segments."""
        what = f"the return value of {self.class_name}.{method}"
        try:
            if shared_memory and self._shm_prefix and type(result) not in _NEVER_SHARED:
                value, buffers, sizes = segment_pool.dumps_sharing(
                    result, prefix=self._shm_prefix, what=what
                )
                return yr_pb2.Outcome(value=value, buffers=buffers, buffer_sizes=sizes)
            return yr_pb2.Outcome(value=serialization.dumps_named(result, what=what))
        except BaseException as error:
            return yr_pb2.Outcome(error=remote_error(error))

    def run_all(self, invocations: Any) -> yr_pb2.CallReply:
        """Run a batch in order (one instance, one call at a time)."""
        return yr_pb2.CallReply(outcomes=[self.run(invocation) for invocation in invocations])


# Results that have no buffers to share: pickled as they are (most results).
_NEVER_SHARED = frozenset({type(None), bool, int, float, complex, str})


def resolve_refs(values: Any) -> list[Any]:
    """Replace ``ObjectRef`` arguments by their values (refs arrive already resolved)."""
    return [value.result() if isinstance(value, ObjectRef) else value for value in values]


def _missing_module(class_name: str, error: ModuleNotFoundError) -> str:
    return (
        f"unpickling {class_name}: this instance's image lacks module {error.name!r}; ship it "
        "with cloudpickle.register_pickle_by_value(module) before creating the instance, or "
        "run an image that has it (the chart's instance.image; docs/quickstart-kubernetes.md)"
    )


def remote_error(error: BaseException, *, context: str = "") -> yr_pb2.RemoteError:
    """What travels back to the caller: the original exception and one traceback per hop.

    An error that came from a callee (a ``YRInvokeError`` the method let propagate) travels as
    the callee's original exception, its traceback followed by this process's frames.
    """
    if isinstance(error, YRInvokeError) and error.cause is not None:
        original = error.cause
        formatted = tracebacks.format_hop(error, original)
    else:
        original = error
        formatted = tracebacks.format_error(error)
    if context:
        formatted = f"(raised in {context})\n{formatted}"
    if isinstance(error, YRInvokeError):
        formatted = tracebacks.join_hops(error.remote_traceback, formatted)
    blob, why_not = serialization.dumps_exception(original)
    if why_not:
        formatted = f"{formatted.rstrip()}\n({why_not})\n"
    return yr_pb2.RemoteError(
        exception=blob,
        type_name=f"{type(original).__module__}.{type(original).__qualname__}",
        message=str(original),
        traceback=formatted,
    )
