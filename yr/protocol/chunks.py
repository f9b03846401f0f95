"""Large calls in pieces (``Instance.CallStream``), so a gateway forwards them without holding
several copies: a gRPC hop holds a unary message whole, more than once, while it holds only
the pieces in flight of a stream."""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterator

from yr.protocol import yr_pb2

# Above this, a call through a gateway is streamed; below, one message costs less.
STREAM_ABOVE_BYTES = 4 << 20
CHUNK_BYTES = 1 << 20


def request_chunks(request: yr_pb2.CallRequest) -> Iterator[yr_pb2.CallChunk]:
    """The serialized request, piece by piece, in order."""
    data = memoryview(request.SerializeToString())
    for start in range(0, len(data), CHUNK_BYTES):
        yield yr_pb2.CallChunk(data=bytes(data[start : start + CHUNK_BYTES]))


async def joined_request(chunks: AsyncIterable[yr_pb2.CallChunk]) -> yr_pb2.CallRequest:
    """The request the pieces make up (the instance needs it whole to run it)."""
    parts = [chunk.data async for chunk in chunks]
    data = b"".join(parts)
    parts.clear()
    return yr_pb2.CallRequest.FromString(data)
