"""Instance classes written as openYuanrong users write them, for the compatibility tests."""

from __future__ import annotations

import os

import yr


@yr.instance
class EnvReader:
    def read(self, name: str) -> str | None:
        return os.environ.get(name)
