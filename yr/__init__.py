"""yr: stateful functions (actors) for Python, as a tree of supervisors and workers.

The public API; everything else in the package is internal and may change.
"""

import logging as _logging

from yr.errors import (
    YRCancelledError,
    YRError,
    YRInstanceDiedError,
    YRInvokeError,
    YRNotInitializedError,
    YRProtocolError,
    YRSchedulingError,
    YRSerializationError,
    YRTimeoutError,
)
from yr.functions import FunctionProxy, cancel, invoke
from yr.generators import ObjectRefGenerator
from yr.ignored_options import IgnoredOptionWarning
from yr.options import Config, InvokeOptions, LowCPUWarning, ResourceGroupOptions
from yr.proxies import (
    InstanceCreator,
    InstanceHandle,
    MethodProxy,
    exit,
    get_instance,
    instance,
    kill_instance,
    list_named_instances,
    method,
)
from yr.proxies import InstanceHandle as InstanceProxy  # openYuanrong's name for a handle
from yr.put_params import CacheType, ConsistencyType, CreateParam, WriteMode
from yr.refs import ObjectRef, get, put, wait
from yr.resource_groups import ResourceGroup, create_resource_group, remove_resource_group
from yr.session import finalize, init, is_initialized

__version__ = "0.1.0"


def resources() -> list[dict]:
    """One dict per node, in openYuanrong's shape: ``id``, ``status`` (0: ready),
    ``capacity`` and ``allocatable`` (``{"CPU": millicores, "Memory": MB}``)."""
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
    "CacheType",
    "Config",
    "ConsistencyType",
    "CreateParam",
    "FunctionProxy",
    "IgnoredOptionWarning",
    "InstanceCreator",
    "InstanceHandle",
    "InstanceProxy",
    "InvokeOptions",
    "LowCPUWarning",
    "MethodProxy",
    "ObjectRef",
    "ObjectRefGenerator",
    "ResourceGroup",
    "ResourceGroupOptions",
    "WriteMode",
    "YRCancelledError",
    "YRError",
    "YRInstanceDiedError",
    "YRInvokeError",
    "YRNotInitializedError",
    "YRProtocolError",
    "YRSchedulingError",
    "YRSerializationError",
    "YRTimeoutError",
    "cancel",
    "create_resource_group",
    "exit",
    "finalize",
    "get",
    "get_instance",
    "init",
    "instance",
    "invoke",
    "is_initialized",
    "kill_instance",
    "list_named_instances",
    "method",
    "put",
    "remove_resource_group",
    "resources",
    "wait",
]
