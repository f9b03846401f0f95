"""yr: stateful functions (actors) for Python, as a tree of supervisors and workers.

The public API; everything else in the package is internal and may change.
"""

import logging as _logging

from yr.errors import (
    YRError,
    YRInstanceDiedError,
    YRInvokeError,
    YRNotInitializedError,
    YRProtocolError,
    YRSchedulingError,
    YRSerializationError,
    YRTimeoutError,
)
from yr.options import Config, InvokeOptions, LowCPUWarning
from yr.proxies import InstanceCreator, InstanceHandle, MethodProxy, get_instance, instance, method
from yr.refs import ObjectRef, get, put, wait
from yr.session import finalize, init, is_initialized

__version__ = "0.1.0"


def resources() -> list[dict]:
    """Capacity and use of the runtime, one dict per node."""
    from yr import session

    return session.current().runtime.resources()


def __getattr__(name: str):  # yr.collective loads numpy: import it only when used
    if name == "collective":
        import importlib

        return importlib.import_module("yr.collective")
    raise AttributeError(f"module 'yr' has no attribute {name!r}")


# A library only adds a NullHandler: the application's logging configuration decides what shows.
_logging.getLogger("yr").addHandler(_logging.NullHandler())

__all__ = [
    "Config",
    "InstanceCreator",
    "InstanceHandle",
    "InvokeOptions",
    "LowCPUWarning",
    "MethodProxy",
    "ObjectRef",
    "YRError",
    "YRInstanceDiedError",
    "YRInvokeError",
    "YRNotInitializedError",
    "YRProtocolError",
    "YRSchedulingError",
    "YRSerializationError",
    "YRTimeoutError",
    "finalize",
    "get",
    "get_instance",
    "init",
    "instance",
    "is_initialized",
    "method",
    "put",
    "resources",
    "wait",
]
