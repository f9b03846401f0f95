"""``@yr.instance`` and the proxies users hold: creators, instance handles and methods."""

from __future__ import annotations

import inspect
import os
import threading
import time
from typing import Any

from yr import serialization, session, sharedmem
from yr.contract import SELF_EXIT_MESSAGE
from yr.errors import YRError, YRTimeoutError
from yr.generators import ObjectRefGenerator
from yr.options import InvokeOptions
from yr.refs import ObjectRef
from yr.runtime.base import ClassInfo, InstanceSpec
from yr.stream_protocol import is_generator

RETURN_NUMS_ATTRIBUTE = "__yr_return_nums__"
NAME_POLL_FIRST_S = 0.02
NAME_POLL_MAX_S = 0.5


def method(function: Any = None, *, return_nums: int = 1) -> Any:
    """Declare how many refs a method's ``invoke`` returns (its result is unpacked into them)."""
    if isinstance(return_nums, bool) or not isinstance(return_nums, int) or return_nums < 0:
        raise ValueError(f"return_nums must be a non-negative integer, got {return_nums!r}")

    def decorate(target: Any) -> Any:
        setattr(target, RETURN_NUMS_ATTRIBUTE, return_nums)
        return target

    return decorate(function) if function is not None else decorate


def instance(cls: type | None = None, *, invoke_options: InvokeOptions | None = None) -> Any:
    """Make a class a stateful function: ``Cls.invoke(...)`` starts an instance of it."""
    if invoke_options is not None and not isinstance(invoke_options, InvokeOptions):
        raise TypeError(
            f"invoke_options must be a yr.InvokeOptions, got {type(invoke_options).__name__}"
        )

    def decorate(target: type) -> InstanceCreator:
        if not inspect.isclass(target):
            raise TypeError(f"@yr.instance decorates a class, got {target!r}")
        return InstanceCreator(target, (invoke_options or InvokeOptions()).checked())

    return decorate(cls) if cls is not None else decorate


def _class_info(cls: type) -> ClassInfo:
    methods = {
        name: getattr(member, RETURN_NUMS_ATTRIBUTE, 1)
        for name, member in inspect.getmembers(cls, callable)
        if not name.startswith("__")
    }
    hidden = sorted(set(methods) & _HANDLE_ATTRIBUTES)
    if hidden:
        raise TypeError(
            f"{cls.__qualname__}.{hidden[0]} would be hidden by the instance handle's own "
            f"{hidden[0]!r} (handle attributes: {', '.join(sorted(_HANDLE_ATTRIBUTES))}); "
            "rename the method"
        )
    return ClassInfo(
        class_name=f"{cls.__module__}.{cls.__qualname__}",
        method_meta=methods,
        signatures={
            name: signature
            for name in methods
            if (signature := _plain_signature(cls, name)) is not None
        },
        generators=frozenset(
            name for name in methods if is_generator(inspect.getattr_static(cls, name, None))
        ),
        has_shutdown_hook=callable(getattr(cls, "__yr_shutdown__", None)),
    )


def _plain_signature(cls: type, name: str) -> inspect.Signature | None:
    """The signature of an ordinary method, stripped of defaults and annotations so it
    pickles whatever they hold; None when it cannot be known or is not an ordinary method."""
    if not inspect.isfunction(inspect.getattr_static(cls, name, None)):
        return None  # staticmethod, classmethod, a callable attribute...
    try:
        signature = inspect.signature(getattr(cls, name))
    except (TypeError, ValueError):
        return None
    empty = inspect.Parameter.empty
    return signature.replace(
        parameters=[
            parameter.replace(
                default=None if parameter.default is not empty else empty, annotation=empty
            )
            for parameter in signature.parameters.values()
        ],
        return_annotation=inspect.Signature.empty,
    )


class InstanceCreator:
    """What ``@yr.instance`` turns a class into."""

    def __init__(self, cls: type, options: InvokeOptions) -> None:
        self.__yr_wrapped_class__ = cls
        self._options = options
        self._class_info = _class_info(cls)
        self.__doc__ = cls.__doc__
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__module__ = cls.__module__

    @property
    def cls(self) -> type:
        return self.__yr_wrapped_class__

    def options(self, invoke_options: InvokeOptions) -> InstanceCreator:
        """A creator whose instances use ``invoke_options`` instead of the decorator's."""
        if not isinstance(invoke_options, InvokeOptions):
            raise TypeError(
                f"options() takes a yr.InvokeOptions, got {type(invoke_options).__name__}"
            )
        return InstanceCreator(self.cls, invoke_options.checked())

    def invoke(self, *args: Any, **kwargs: Any) -> InstanceHandle:
        """Start an instance (asynchronously) and return its handle at once."""
        current = session.current()
        _check_signature(self.cls.__init__, args, kwargs, what=f"{self.__name__}()")
        options = self._options.checked()
        if options.is_detached:
            _check_detached(current.runtime, options, self.__name__)
        if options.name and options.get_if_exists:
            existing = self._existing(current, options)
            if existing is not None:
                return existing
        payload, buffers = _payload(
            self.cls, args, kwargs, shm_prefix=_shared_memory_prefix(current.runtime, options)
        )
        spec = InstanceSpec(
            class_info=self._class_info, payload=payload, options=options, payload_buffers=buffers
        )
        try:
            instance_id = current.runtime.create(spec, owner_id=current.owner_id)
        except BaseException as error:
            sharedmem.discard(list(buffers))  # no instance took them
            # the name was taken between the lookup and the create: the other one wins
            taken = isinstance(error, ValueError) and options.get_if_exists
            existing = self._existing(current, options) if taken else None
            if existing is None:
                raise
            return existing
        return InstanceHandle(instance_id, self._class_info)

    def _existing(self, current: Any, options: InvokeOptions) -> InstanceHandle | None:
        """The live instance holding ``options.name``, if any; refused if of another class."""
        try:
            instance_id, class_info = current.runtime.get_named(options.name, options.namespace)
        except ValueError:
            return None
        if class_info.class_name != self._class_info.class_name:
            raise ValueError(
                f"get_if_exists: the instance named {options.name!r} in namespace "
                f"{options.namespace!r} is a {class_info.class_name}, not a "
                f"{self._class_info.class_name}"
            )
        return InstanceHandle(instance_id, self._class_info)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"{self.__name__} is a yr instance class: create it with "
            f"{self.__name__}.invoke(...) instead of calling it"
        )

    def __repr__(self) -> str:
        return f"<yr.instance {self._class_info.class_name} {self._options}>"


def _check_detached(runtime: Any, options: InvokeOptions, class_name: str) -> None:
    """A detached instance is reached later only by its name, and needs a runtime that can
    keep it past its creator's end."""
    if not options.name:
        raise ValueError(
            f"{class_name}: a detached instance needs a name (InvokeOptions(name=...)), "
            "since a later driver can reach it only through yr.get_instance(name, namespace)"
        )
    if not runtime.supports_detached:
        raise YRError(
            f"{class_name}: this runtime ({type(runtime).__name__}) has nothing to keep a "
            "detached instance alive past its creator; create it without "
            "lifetime='detached' (it then lives until yr.finalize())"
        )


def _shared_memory_prefix(runtime: Any, options: InvokeOptions) -> str:
    """Where large constructor arguments go: this session's segments, if instances share
    this machine's memory; "" to keep them in the payload (a pod reads it from a Secret, and
    a detached instance outlives this session's segments)."""
    if runtime.shares_memory and sharedmem.available() and not options.is_detached:
        return sharedmem.session_prefix(runtime.session_token)
    return ""


def _payload(
    cls: type, args: tuple[Any, ...], kwargs: dict[str, Any], *, shm_prefix: str
) -> tuple[bytes, tuple[str, ...]]:
    """Pickle the class and constructor arguments, naming whichever of them cannot be. With
    ``shm_prefix``, large buffers are written once to shared-memory segments, as a call's
    are, instead of into the payload: their names come back with it."""
    writer = sharedmem.BufferWriter(prefix=shm_prefix) if shm_prefix else None
    if writer is not None:
        args, kwargs = sharedmem.call_arguments_out_of_band(args, kwargs)
    try:
        payload = serialization.dumps((cls, args, kwargs), buffer_callback=writer)
    except BaseException as error:
        if writer is not None:
            sharedmem.discard(writer.names)
        if isinstance(error, Exception):
            serialization.dumps_call_arguments(args, kwargs, target=f"{cls.__name__}.__init__")
            serialization.dumps_named(cls, what=f"class {cls.__qualname__}")
        raise
    return payload, tuple(writer.names) if writer is not None else ()


def _check_signature(function: Any, args: tuple[Any, ...], kwargs: dict[str, Any], *, what: str):
    """Reject arguments the method could never accept, before anything is created or sent."""
    if isinstance(function, inspect.Signature):
        signature = function
    else:
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):
            return
    try:
        signature.bind(None, *args, **kwargs)
    except TypeError as error:
        raise TypeError(f"{what}: {error}") from None


class InstanceHandle:
    """A reference to a running instance; picklable, so it can be passed to other instances."""

    def __init__(self, instance_id: str, class_info: ClassInfo) -> None:
        self._instance_id = instance_id
        self._class_info = class_info

    @property
    def instance_id(self) -> str:
        return self._instance_id

    def __getattr__(self, name: str) -> MethodProxy:
        if name.startswith("__"):
            raise AttributeError(name)
        meta = self._class_info.method_meta
        if name not in meta:
            import difflib  # only for this message: an idle instance never needs it

            close = difflib.get_close_matches(name, list(meta), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise AttributeError(
                f"{self._class_info.short_name} has no method {name!r}{hint} "
                f"(methods: {', '.join(sorted(meta)) or 'none'})"
            )
        proxy = MethodProxy(self, name, meta[name])
        self.__dict__[name] = proxy  # found without __getattr__ from now on
        return proxy

    def terminate(self, is_sync: bool = False) -> None:
        """Stop the instance and everything it created; ``is_sync`` waits until it is gone."""
        from yr.errors import YRError

        current = session.current()
        current.runtime.terminate(self._instance_id, wait=is_sync)
        current.client.forget(
            self._instance_id, YRError(f"instance {self._instance_id} was terminated")
        )

    def __reduce__(self):
        return (InstanceHandle, (self._instance_id, self._class_info))

    def __repr__(self) -> str:
        return f"<yr instance {self._instance_id} of {self._class_info.class_name}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, InstanceHandle) and other._instance_id == self._instance_id

    def __hash__(self) -> int:
        return hash(self._instance_id)


class MethodProxy:
    """``handle.method``: ``invoke`` queues a call and returns its ref(s) at once."""

    def __init__(self, handle: InstanceHandle, name: str, return_nums: int) -> None:
        self._handle = handle
        self._name = name
        self._return_nums = return_nums

    def options(self, invoke_options: InvokeOptions) -> MethodProxy:
        if not isinstance(invoke_options, InvokeOptions):
            raise TypeError(
                f"options() takes a yr.InvokeOptions, got {type(invoke_options).__name__}"
            )
        return self  # resources are an instance's; a call has nothing to override yet

    def invoke(self, *args: Any, **kwargs: Any) -> ObjectRef | list[ObjectRef] | Any:
        handle = self._handle
        signature = handle._class_info.signatures.get(self._name)
        if signature is not None:
            self._check_arguments(signature, args, kwargs)
        current = session.current()
        streaming = self._name in handle._class_info.generators
        refs = current.client.submit(
            handle.instance_id,
            handle._class_info,
            self._name,
            args,
            kwargs,
            return_nums=1 if streaming else self._return_nums,
        )
        if streaming:
            return ObjectRefGenerator(handle.instance_id, handle._class_info, refs[0])
        return refs[0] if self._return_nums == 1 else refs

    def _check_arguments(
        self, signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        """``_check_signature``, once per shape: with defaults and annotations stripped, the
        outcome depends only on how many positional arguments and which keywords."""
        shape = (id(signature), len(args), tuple(kwargs))
        if _ACCEPTED_SHAPES.get(shape) is signature:  # the value keeps the id from reuse
            return
        what = f"{self._handle._class_info.short_name}.{self._name}()"
        _check_signature(signature, args, kwargs, what=what)
        if len(_ACCEPTED_SHAPES) >= _MAX_ACCEPTED_SHAPES:
            _ACCEPTED_SHAPES.clear()
        _ACCEPTED_SHAPES[shape] = signature

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"call remote methods with .invoke(): handle.{self._name}.invoke(...)")


# (id of a method's signature, positional count, keyword names) -> that signature, for
# argument shapes invoke() has already checked: binding is a large share of invoke's cost
_ACCEPTED_SHAPES: dict[tuple[int, int, tuple[str, ...]], inspect.Signature] = {}
_MAX_ACCEPTED_SHAPES = 4096


_HANDLE_ATTRIBUTES = frozenset(name for name in vars(InstanceHandle) if not name.startswith("_"))


def get_instance(name: str, namespace: str = "", timeout: float = 60) -> InstanceHandle:
    """A handle to the instance created with ``InvokeOptions(name=name, namespace=namespace)``,
    waiting up to ``timeout`` s (-1: forever; 0: only look) for it to appear."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"get_instance() needs a non-empty instance name, got {name!r}")
    if not isinstance(namespace, str):
        raise TypeError(f"get_instance() namespace must be a str, got {namespace!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"get_instance() timeout must be a number of seconds, got {timeout!r}")
    if timeout < 0 and timeout != -1:
        raise ValueError(f"get_instance() timeout must be >= 0 or -1 (forever), got {timeout}")
    current = session.current()
    deadline = None if timeout == -1 else time.monotonic() + timeout
    pause = NAME_POLL_FIRST_S
    while True:
        try:
            instance_id, class_info = current.runtime.get_named(name, namespace)
            return InstanceHandle(instance_id, class_info)
        except ValueError as missing:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise YRTimeoutError(
                    f"get_instance: no instance named {name!r} in namespace {namespace!r} "
                    f"appeared within {timeout:g} s"
                ) from missing
        # the runtimes publish no name events: look again, less often as time goes by
        time.sleep(pause if left is None else min(pause, left))
        pause = min(pause * 2, NAME_POLL_MAX_S)


def list_named_instances() -> list[str]:
    """Names of the live named instances: ``name``, or ``namespace-name`` with a namespace."""
    return session.current().runtime.list_named()


def kill_instance(instance: InstanceHandle | str) -> None:
    """End an instance (and everything it created) by handle or id; returns at once."""
    if isinstance(instance, InstanceHandle):
        instance.terminate()
        return
    if not isinstance(instance, str) or not instance:
        raise TypeError(f"kill_instance() takes an instance handle or id, got {instance!r}")
    InstanceHandle(instance, ClassInfo(class_name="")).terminate()


EXIT_GRACE_S = 30.0  # how long yr.exit waits for the runtime to end this process


def exit() -> None:  # openYuanrong's name, shadowing the builtin here only
    """End the calling instance (and everything it created); its callers, including the
    caller of the running method, get an error saying it exited. Does not return."""
    current = session.current()
    if current.is_driver or current.owner_id is None:
        raise YRError("yr.exit() ends an instance from inside; a driver ends with yr.finalize()")
    current.runtime.end_self(current.owner_id, reason=SELF_EXIT_MESSAGE)
    # the runtime stops this process; should that not come, leave anyway
    threading.Event().wait(EXIT_GRACE_S)
    os._exit(0)
