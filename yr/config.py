"""openYuanrong's import path for the option types (``from yr.config import InvokeOptions``)."""

from yr.options import Config, InvokeOptions, ResourceGroupOptions

__all__ = ["Config", "InvokeOptions", "ResourceGroupOptions"]
