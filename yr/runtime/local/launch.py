"""How a driver starts a yr program (the fork server, the keeper) as a child process: on the
driver's own import path, never with the child's working directory put first on it."""

from __future__ import annotations

import os
import sys

# ``python -m`` (and ``-c``) puts the working directory first on sys.path, so a user's
# ``selectors.py`` or ``yr/`` there would replace the real one in the fork server and in every
# instance. ``-c`` puts it there as "" (unless PYTHONSAFEPATH already keeps it off): drop that
# entry before importing anything, then run the module as ``-m`` would. (``-P`` does the same
# from Python 3.11 on; this works on 3.10 too.)
_RUN_MODULE = (
    "import sys; sys.path[0] or sys.path.pop(0); import runpy; "
    "runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)"
)


def module_command(module: str, *args: str) -> list[str]:
    """The command running ``module`` as a program, as ``python -m module args`` would, but
    without the working directory on its import path."""
    return [sys.executable, "-c", _RUN_MODULE, module, *args]


def driver_import_path() -> str:
    """The driver's sys.path as a PYTHONPATH, so a child imports what the driver can, in the
    same order: an empty entry (a ``python -c`` or interactive driver's working directory)
    becomes that directory, since the child's own is not on its path."""
    cwd = os.getcwd()
    return os.pathsep.join(entry or cwd for entry in sys.path)
