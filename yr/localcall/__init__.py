"""The same-machine fast path: calls over a Unix domain socket, beside gRPC."""
