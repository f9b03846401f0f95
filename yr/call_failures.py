"""What a failed call RPC means for its calls: a plain error, or a death to ask the runtime about.

A transport failure may be the instance dying (the runtime says how, and whether it restarts);
a call that provably never reached the instance may go to its next incarnation.
"""

from __future__ import annotations

import grpc

from yr.errors import YRError, YRProtocolError
from yr.localcall.channel import LocalRpcError
from yr.options import env_seconds
from yr.protocol import WRONG_INSTANCE_CODE

DEATH_REPORT_TIMEOUT_ENV = "YR_DEATH_REPORT_TIMEOUT_S"
DEFAULT_DEATH_REPORT_TIMEOUT_S = 5.0

# Transport failures after which we ask the runtime whether the instance died.
_DEATH_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)
_PROTOCOL_CODES = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.FAILED_PRECONDITION})


def may_be_a_death(error: grpc.RpcError) -> bool:
    """Whether the instance may have died (or been replaced at its address)."""
    return error.code() in _DEATH_CODES or error.code() == WRONG_INSTANCE_CODE


def plain_failure(error: grpc.RpcError, method: str) -> YRError:
    """The error a call gets for a failure that is not a death."""
    if error.code() in _PROTOCOL_CODES:
        return YRProtocolError(error.details())
    return YRError(f"call {method} failed: {error.code().name}: {error.details()}")


def never_delivered(error: grpc.RpcError) -> bool:
    """True when the transport failed before the call reached the instance (nothing ran)."""
    if error.code() == WRONG_INSTANCE_CODE:
        return True  # another instance (a reused address) refused it before running anything
    if isinstance(error, LocalRpcError):
        return error.never_delivered
    details = (error.details() or "").lower()
    return error.code() == grpc.StatusCode.UNAVAILABLE and (
        "connection refused" in details or "failed to connect" in details
    )


def finalized_error(method: str) -> YRError:
    return YRError(f"yr.finalize() ended the session before the call {method} was answered")


def death_report_timeout_s() -> float:
    """How long a caller waits, after a transport failure, for the runtime to say whether the
    instance died (``YR_DEATH_REPORT_TIMEOUT_S``, default 5 s; on Kubernetes a death is seen
    through a watch, seconds late). Past it, the call fails with the transport's error."""
    return env_seconds(DEATH_REPORT_TIMEOUT_ENV, DEFAULT_DEATH_REPORT_TIMEOUT_S)
