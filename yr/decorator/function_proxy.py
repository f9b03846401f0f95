"""openYuanrong's import path for the stateless function proxy type."""

from yr.functions import FunctionProxy

__all__ = ["FunctionProxy"]
