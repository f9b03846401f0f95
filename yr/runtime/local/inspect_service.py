"""The Inspect service of a driver's control server: what the ``yr`` command asks a session.

Behind the same token gate as the Runtime service; replies are JSON and protobuf only.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol

import grpc

from yr.errors import YRError
from yr.protocol import yr_pb2, yr_pb2_grpc


class Inspectable(Protocol):
    """What the local runtime answers the ``yr`` command (typed here: no import cycle)."""

    def inspect(self) -> dict[str, Any]: ...
    def log_lines(self, instance_id: str, *, after: int = 0) -> tuple[list, bool]: ...


class InspectServicer(yr_pb2_grpc.InspectServicer):
    def __init__(self, runtime: Inspectable) -> None:
        self._runtime = runtime

    async def Snapshot(self, request, context):
        view = await asyncio.get_running_loop().run_in_executor(None, self._runtime.inspect)
        return yr_pb2.SnapshotReply(json=json.dumps(view))

    async def Logs(self, request, context):
        try:
            lines, ended = self._runtime.log_lines(request.instance_id, after=request.after)
        except YRError as error:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(error))
        return yr_pb2.LogsReply(
            lines=[
                yr_pb2.LogLine(number=line.number, stream=line.stream, text=line.text)
                for line in lines
            ],
            ended=ended,
        )


def add_to_server(runtime: Inspectable, server: grpc.aio.Server) -> None:
    yr_pb2_grpc.add_InspectServicer_to_server(InspectServicer(runtime), server)
