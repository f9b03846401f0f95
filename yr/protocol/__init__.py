"""The gRPC protocol: generated messages and stubs, the version and the metadata keys."""

import grpc

from yr.protocol import yr_pb2, yr_pb2_grpc

PROTOCOL_VERSION = 2
TOKEN_METADATA_KEY = "x-yr-token"
PROTOCOL_METADATA_KEY = "x-yr-protocol"
ROUTE_METADATA_KEY = "x-yr-route"  # the instance a gateway forwards a call to
# The reserved method through which a supervisor forms a yr.collective group in its members.
COLLECTIVE_METHOD = "__yr_collective__"
# A server refusing a call meant for another instance or incarnation (nothing ran).
WRONG_INSTANCE_CODE = grpc.StatusCode.NOT_FOUND
ERROR_METADATA_KEY = "x-yr-error-bin"  # a control-plane error, pickled, in trailing metadata
# Resolve's trailing metadata for an instance of another session (a kept, detached one): which
# session, and (under TOKEN_METADATA_KEY) the token its instances check.
SESSION_METADATA_KEY = "x-yr-session"

# grpcio's defaults (4 MiB messages, a few thousand pending requests) are too small for
# large arguments and for thousands of calls in flight.
CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
]
SERVER_OPTIONS: list[tuple[str, int]] = [
    *CHANNEL_OPTIONS,
    ("grpc.max_concurrent_streams", 100_000),
    ("grpc.server.max_pending_requests", 1_000_000),
    ("grpc.server.max_pending_requests_hard_limit", 1_000_000),
    ("grpc.server_max_unrequested_time_in_server", 3600),
    ("grpc.so_reuseport", 0),
]

__all__ = [
    "CHANNEL_OPTIONS",
    "ERROR_METADATA_KEY",
    "PROTOCOL_METADATA_KEY",
    "PROTOCOL_VERSION",
    "ROUTE_METADATA_KEY",
    "SERVER_OPTIONS",
    "SESSION_METADATA_KEY",
    "TOKEN_METADATA_KEY",
    "WRONG_INSTANCE_CODE",
    "yr_pb2",
    "yr_pb2_grpc",
]
