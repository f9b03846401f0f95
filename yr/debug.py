"""The Debug service of an instance server: its threads' stacks and what they wait on.

``sys._current_frames`` reads each thread's current frame under the GIL: the threads keep
running, and what a stuck method is blocked in shows up as its innermost frame. Waits come
from yr.waits, which notes every blocking ``yr.get`` / ``yr.wait`` of this process.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback

import grpc

from yr import waits
from yr.protocol import yr_pb2, yr_pb2_grpc


def _thread_names() -> dict[int, str]:
    return {thread.ident or 0: thread.name for thread in threading.enumerate()}


def capture_stacks() -> yr_pb2.StacksReply:
    """One entry per live thread, the calling thread included, ordered by thread name."""
    names = _thread_names()
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


def blocked_calls() -> list[yr_pb2.BlockedCall]:
    """Every call a thread of this process is blocked on, longest wait first."""
    names, now = _thread_names(), time.monotonic()
    found = [
        yr_pb2.BlockedCall(
            thread=names.get(wait.thread, f"thread-{wait.thread}"),
            instance_id=instance_id,
            method=method.rsplit(".", 1)[-1],  # refs name it Class.method
            seconds=now - wait.since,
        )
        for wait in waits.current()
        for instance_id, method in wait.calls
    ]
    return sorted(found, key=lambda call: -call.seconds)


class DebugServicer(yr_pb2_grpc.DebugServicer):
    """For callers that passed the server's token gate (the gate runs first)."""

    def __init__(self, instance_id: str) -> None:
        self._instance_id = instance_id

    async def Stacks(self, request: yr_pb2.StacksRequest, context: grpc.aio.ServicerContext):
        return capture_stacks()

    async def Waits(self, request: yr_pb2.WaitsRequest, context: grpc.aio.ServicerContext):
        return yr_pb2.WaitsReply(instance_id=self._instance_id, calls=blocked_calls())


def add_to_server(server: grpc.aio.Server, *, instance_id: str) -> None:
    yr_pb2_grpc.add_DebugServicer_to_server(DebugServicer(instance_id), server)
