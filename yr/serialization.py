"""cloudpickle in and out, with errors that name the value that could not be pickled."""

from __future__ import annotations

import importlib
import io
import linecache
import os
import pickle
import sys
import types
from collections.abc import Callable
from typing import Any

import cloudpickle

from yr.errors import YRSerializationError

WRAPPED_CLASS_ATTRIBUTE = "__yr_wrapped_class__"


def _wrapped_class(module_name: str, qualname: str) -> type:
    """Import the class that ``@yr.instance`` replaced by a creator in its module."""
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    return getattr(target, WRAPPED_CLASS_ATTRIBUTE, target)


class _Pickler(cloudpickle.CloudPickler):
    """cloudpickle that pickles decorated classes by reference although their module name
    now points at the ``@yr.instance`` creator, not at the class itself."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, types.CodeType):
            return _reduce_code(obj)
        if isinstance(obj, type):
            module_name = getattr(obj, "__module__", None)
            if (
                module_name
                and module_name != "__main__"
                and module_name in sys.modules
                and module_name not in cloudpickle.list_registry_pickle_by_value()
            ):
                holder: Any = sys.modules[module_name]
                try:
                    for part in obj.__qualname__.split("."):
                        holder = getattr(holder, part)
                except AttributeError:
                    holder = None
                if getattr(holder, WRAPPED_CLASS_ATTRIBUTE, None) is obj:
                    return _wrapped_class, (module_name, obj.__qualname__)
        return super().reducer_override(obj)


def _reduce_code(code: types.CodeType) -> tuple[Any, tuple[Any, ...]]:
    """cloudpickle's code reduction, minus its ``<dynamic-code>`` file name: tracebacks from
    by-value code (the driver script's classes) name the user's file and show its lines."""
    _, args = cloudpickle.cloudpickle._code_reduce(code)
    filename = code.co_filename
    args = tuple(filename if arg == "<dynamic-code>" else arg for arg in args)
    last = max((line for _, _, line in code.co_lines() if line is not None), default=0)
    source = linecache.getlines(filename)[code.co_firstlineno - 1 : last]
    return _load_code, (args, filename, code.co_firstlineno, source)


def _load_code(
    args: tuple[Any, ...], filename: str, first_line: int, source: list[str]
) -> types.CodeType:
    if source and not os.path.exists(filename):  # e.g. a pod: lend linecache the driver's lines
        entry = linecache.cache.get(filename)
        if entry is None or entry[1] is None:  # nothing, or lines lent before: add these
            lines = list(entry[2]) if entry else []
            lines += ["\n"] * (first_line - 1 + len(source) - len(lines))
            lines[first_line - 1 : first_line - 1 + len(source)] = source
            linecache.cache[filename] = (0, None, lines, filename)
    return types.CodeType(*args)


def _rebuild_exception(cls: type, args: tuple[Any, ...], state: dict[str, Any]) -> BaseException:
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


class _ExceptionWithoutInit:
    """Pickles an exception as its class, args and attributes: rebuilt without calling
    ``__init__``, whose signature need not match ``args`` (``CodeError(42, "nope")``)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __reduce__(self):
        error = self.error
        return _rebuild_exception, (type(error), error.args, dict(vars(error)))


def dumps_exception(error: BaseException) -> tuple[bytes, str]:
    """Pickle ``error`` so that the caller rebuilds it as its own type; else ``b""`` and why."""
    try:
        blob = dumps(error)
        loads(blob)  # pickle calls __init__(*args) on load: a mismatch shows only here
        return blob, ""
    except Exception as plain_error:
        reason = f"{type(plain_error).__name__}: {plain_error}"
    try:
        blob = dumps(_ExceptionWithoutInit(error))
        if type(loads(blob)) is type(error):
            return blob, ""
    except Exception as error_without_init:
        reason += f"; without __init__: {type(error_without_init).__name__}: {error_without_init}"
    return b"", f"the {type(error).__name__} itself could not be sent back: {reason}"


BufferCallback = Callable[[pickle.PickleBuffer], Any]


def dumps(value: Any, *, buffer_callback: BufferCallback | None = None) -> bytes:
    buffer = io.BytesIO()
    pickler = _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL, buffer_callback=buffer_callback)
    pickler.dump(value)
    return buffer.getvalue()


def loads(data: bytes | memoryview, *, buffers: Any = None) -> Any:
    return pickle.loads(data, buffers=buffers)


NO_ARGUMENTS = pickle.dumps(((), {}), protocol=pickle.HIGHEST_PROTOCOL)
_NONE = pickle.dumps(None, protocol=pickle.HIGHEST_PROTOCOL)


def dumps_call_arguments(
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    target: str,
    buffer_callback: BufferCallback | None = None,
) -> bytes:
    """Pickle ``(args, kwargs)``; on failure, say which argument and why."""
    if not args and not kwargs:
        return NO_ARGUMENTS  # making a pickler is a large share of such a call's invoke
    try:
        return dumps((args, kwargs), buffer_callback=buffer_callback)
    except Exception as whole_error:
        for label, value in _labelled(args, kwargs):
            try:
                dumps(value)
            except Exception as error:
                culprit = find_unpicklable(value)
                where = f" (the culprit: {label.split(' (')[0]}{culprit})" if culprit else ""
                raise YRSerializationError(
                    f"{label} of {target} cannot be serialized{where}: "
                    f"{type(error).__name__}: {error}. Arguments travel to another process "
                    "with cloudpickle; pass plain data, or create the object inside the instance."
                ) from error
        raise YRSerializationError(
            f"the arguments of {target} cannot be serialized: {whole_error}"
        ) from whole_error


def dumps_named(value: Any, *, what: str, buffer_callback: BufferCallback | None = None) -> bytes:
    if value is None:
        return _NONE  # the most common result: no pickler needed
    try:
        return dumps(value, buffer_callback=buffer_callback)
    except Exception as error:
        culprit = find_unpicklable(value)
        where = f" (the culprit: {culprit.lstrip('.')})" if culprit else ""
        raise YRSerializationError(
            f"{what} cannot be serialized{where}: {type(error).__name__}: {error}"
        ) from error


def find_unpicklable(value: Any, *, depth: int = 4) -> str:
    """The path (``.attr``, ``[key]``) to the innermost member that cannot be pickled.

    Returns "" when the value itself is the culprit or the path cannot be found.
    """
    for path, member in _members(value):
        try:
            dumps(member)
        except Exception:
            deeper = find_unpicklable(member, depth=depth - 1) if depth > 1 else ""
            return path + deeper
    return ""


def _members(value: Any):
    if isinstance(value, dict):
        for key, member in list(value.items())[:1000]:
            yield f"[{key!r}]", member
    elif isinstance(value, list | tuple | set | frozenset):
        for index, member in enumerate(list(value)[:1000]):
            yield f"[{index}]", member
    else:
        attributes = getattr(value, "__dict__", None)
        if isinstance(attributes, dict):
            for name, member in attributes.items():
                yield f".{name}", member


def _labelled(args: tuple[Any, ...], kwargs: dict[str, Any]):
    for position, value in enumerate(args):
        yield f"argument {position} ({type(value).__name__})", value
    for name, value in kwargs.items():
        yield f"argument {name!r} ({type(value).__name__})", value
