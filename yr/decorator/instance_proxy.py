"""openYuanrong's import path for the instance proxy types used in annotations."""

from yr.proxies import InstanceCreator, MethodProxy
from yr.proxies import InstanceHandle as InstanceProxy

__all__ = ["InstanceCreator", "InstanceProxy", "MethodProxy"]
