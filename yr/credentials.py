"""The session token of an instance process, held in memory so its children never inherit it."""

from __future__ import annotations

import os

TOKEN_ENVIRONMENT_VARIABLE = "YR_SESSION_TOKEN"
_session_token = ""


def adopt_session_token(token: str) -> None:
    """Keep ``token`` for this process's own use, and take it out of the environment that
    processes started by the user's code would inherit."""
    global _session_token
    _session_token = token
    os.environ.pop(TOKEN_ENVIRONMENT_VARIABLE, None)


def session_token() -> str:
    """The token the instance server adopted, else (a driver-less tool) the environment's."""
    token = _session_token or os.environ.get(TOKEN_ENVIRONMENT_VARIABLE, "")
    if not token:
        raise RuntimeError(
            f"no session token: {TOKEN_ENVIRONMENT_VARIABLE} is not set and no instance server "
            "adopted one"
        )
    return token
