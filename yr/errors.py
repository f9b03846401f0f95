"""The exception hierarchy users catch, including remote errors typed as the user's own class."""

from __future__ import annotations

import signal as _signal
from dataclasses import dataclass


class YRError(Exception):
    """Base class of every error yr raises."""


class YRTimeoutError(YRError, TimeoutError):
    """A wait (``yr.get``, ``yr.wait``, scheduling) ran out of time."""


class YRSchedulingError(YRError):
    """An instance could not be placed: its request exceeds the capacity or timed out waiting."""


class YRSerializationError(YRError, TypeError):
    """An argument, return value or class could not be pickled; the message names it."""


class YRNotInitializedError(YRError):
    """The API was used before ``yr.init()`` or after ``yr.finalize()``."""


class YRProtocolError(YRError):
    """Caller and instance server speak different protocol versions or refuse each other."""


class YRCancelledError(YRError):
    """``yr.cancel`` withdrew the call before it started: it never ran."""


class YRInvokeError(YRError):
    """A user method (or ``__init__``) raised; ``yr.get`` re-raises it typed as the original too.

    The instance is also an instance of the user's exception class, so ``except ValueError``
    works, and its message carries the remote traceback.
    """

    def __init__(self, cause: BaseException | None = None, remote_traceback: str = "") -> None:
        self.cause = cause
        self.remote_traceback = remote_traceback
        super().__init__(self._render())

    def _render(self) -> str:
        cause = self.cause
        header = f"{type(cause).__name__}: {cause}" if cause is not None else "remote error"
        if cause is not None and not isinstance(cause, Exception):
            header += (
                f" (the instance raised {type(cause).__name__}, which is no Exception: it "
                "arrives as a YRInvokeError so that it cannot end the caller)"
            )
        if self.remote_traceback:
            return (
                f"{header}\n\nRemote traceback (innermost first):\n{self.remote_traceback.rstrip()}"
            )
        return header

    def __str__(self) -> str:
        return self._render()

    def __reduce__(self):  # the dual-typed subclass is dynamic: pickle as the plain form
        return (_rebuild_invoke_error, (self.cause, self.remote_traceback))


def _rebuild_invoke_error(cause: BaseException | None, remote_traceback: str) -> YRInvokeError:
    return invoke_error_for(cause, remote_traceback)


_DUAL_TYPES: dict[type, type] = {}


def invoke_error_for(cause: BaseException | None, remote_traceback: str) -> YRInvokeError:
    """Build a ``YRInvokeError`` that is also an instance of ``type(cause)`` where possible.

    Never for BaseExceptions that are no Exception (``SystemExit``, ``KeyboardInterrupt``,
    ``GeneratorExit``): typed as themselves, an uncaught one would silently end the caller.
    """
    cause_type = type(cause) if cause is not None else None
    if (
        cause_type is None
        or issubclass(cause_type, YRInvokeError)
        or not issubclass(cause_type, Exception)
    ):
        return YRInvokeError(cause, remote_traceback)
    dual = _DUAL_TYPES.get(cause_type)
    if dual is None:
        try:
            dual = type(
                f"YRInvokeError({cause_type.__name__})",
                (YRInvokeError, cause_type),
                {"__module__": cause_type.__module__},
            )
        except TypeError:  # e.g. a final/builtin-layout class that refuses a second base
            return YRInvokeError(cause, remote_traceback)
        _DUAL_TYPES[cause_type] = dual
    error = dual.__new__(dual)
    error.__dict__.update(getattr(cause, "__dict__", {}))  # e.g. CodeError(42, ...).code
    error.cause = cause
    error.remote_traceback = remote_traceback
    error.args = (error._render(),)
    return error


@dataclass(frozen=True)
class DeathInfo:
    """How one incarnation of an instance ended."""

    exit_code: int | None = None
    signal: int | None = None
    reason: str = ""
    will_restart: bool = False
    restarts_left: int = 0

    def describe(self) -> str:
        if self.reason and self.exit_code is None and self.signal is None:
            return self.reason
        if self.signal is not None:
            try:
                name = _signal.Signals(self.signal).name
            except ValueError:
                name = f"signal {self.signal}"
            text = f"killed by signal {self.signal} ({name})"
        elif self.exit_code is not None:
            text = f"exited with code {self.exit_code}"
        else:
            text = "died"
        return f"{text}: {self.reason}" if self.reason else text


class YRInstanceDiedError(YRError):
    """The instance serving a call died; says which, why, and whether it will restart."""

    def __init__(self, instance_id: str, class_name: str, death: DeathInfo) -> None:
        self.instance_id = instance_id
        self.class_name = class_name
        self.death = death
        if death.will_restart:
            future = f"it will be restarted ({death.restarts_left} restart(s) left after this one)"
        else:
            future = "it will not be restarted"
        super().__init__(
            f"instance {instance_id} ({class_name}) died: {death.describe()}; {future}"
        )

    @property
    def will_restart(self) -> bool:
        return self.death.will_restart

    @property
    def signal(self) -> int | None:
        return self.death.signal

    @property
    def exit_code(self) -> int | None:
        return self.death.exit_code

    def __reduce__(self):
        return (YRInstanceDiedError, (self.instance_id, self.class_name, self.death))
