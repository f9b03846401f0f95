"""Runtimes decide how an instance comes to exist and how its death is learned.

Also openYuanrong's import path for ``yr.put``'s parameter object (``yr.runtime.CreateParam``).
"""

from yr.put_params import CacheType, ConsistencyType, CreateParam, WriteMode

__all__ = ["CacheType", "ConsistencyType", "CreateParam", "WriteMode"]
