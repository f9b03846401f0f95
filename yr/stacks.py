"""The Python stack of every thread of this process, taken without stopping it (``yr stack``).

``sys._current_frames`` reads each thread's current frame under the GIL: the threads keep
running, and what a stuck method is blocked in shows up as its innermost frame.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback

import grpc

from yr.protocol import yr_pb2, yr_pb2_grpc


def capture() -> yr_pb2.StacksReply:
    """One entry per live thread, the calling thread included, ordered by thread name."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    threads = [
        yr_pb2.ThreadStack(
            name=names.get(ident, f"thread-{ident}"),
            ident=ident,
            stack="".join(traceback.format_stack(frame)),
        )
        for ident, frame in sys._current_frames().items()
    ]
    threads.sort(key=lambda thread: thread.name)
    return yr_pb2.StacksReply(pid=os.getpid(), threads=threads)


class DebugServicer(yr_pb2_grpc.DebugServicer):
    """Stacks for callers that passed the server's token gate (the gate runs first)."""

    async def Stacks(self, request: yr_pb2.StacksRequest, context: grpc.aio.ServicerContext):
        return capture()


def add_to_server(server: grpc.aio.Server) -> None:
    yr_pb2_grpc.add_DebugServicer_to_server(DebugServicer(), server)
