"""openYuanrong's import path for ``ObjectRef`` (``from yr.object_ref import ObjectRef``)."""

from yr.refs import ObjectRef

__all__ = ["ObjectRef"]
