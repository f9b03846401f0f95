"""``yr`` against the local runtime: the user's live sessions, found in the runtime directory.

Each session's control server answers Inspect (instances, waits, logs) and each instance's
server answers Debug (stacks); both need the session token, read from its 0600 file.
"""

from __future__ import annotations

import json
from typing import Any

import grpc

from yr.cli.waits import attach_waits
from yr.protocol import CHANNEL_OPTIONS, TOKEN_METADATA_KEY, yr_pb2, yr_pb2_grpc
from yr.runtime.local import discovery

RPC_TIMEOUT_S = 10.0


class LocalSession:
    """One live driver's session."""

    def __init__(self, info: discovery.SessionInfo) -> None:
        self.info = info
        self._metadata = ((TOKEN_METADATA_KEY, info.token()),)

    def _channel(self, address: str) -> grpc.Channel:
        return grpc.insecure_channel(address, options=CHANNEL_OPTIONS)

    def snapshot(self) -> dict[str, Any]:
        with self._channel(self.info.control_address) as channel:
            reply = yr_pb2_grpc.InspectStub(channel).Snapshot(
                yr_pb2.SnapshotRequest(), metadata=self._metadata, timeout=RPC_TIMEOUT_S
            )
        view = json.loads(reply.json)
        view["session"] = {
            "id": self.info.session_id,
            "pid": self.info.pid,
            "program": self.info.program,
        }
        return view

    def logs(self, instance_id: str, *, after: int = 0) -> yr_pb2.LogsReply:
        with self._channel(self.info.control_address) as channel:
            return yr_pb2_grpc.InspectStub(channel).Logs(
                yr_pb2.LogsRequest(instance_id=instance_id, after=after),
                metadata=self._metadata,
                timeout=RPC_TIMEOUT_S,
            )

    def waits(self, row: dict[str, Any]) -> yr_pb2.WaitsReply:
        with self._channel(row["address"]) as channel:
            return yr_pb2_grpc.DebugStub(channel).Waits(
                yr_pb2.WaitsRequest(), metadata=self._metadata, timeout=RPC_TIMEOUT_S
            )

    def stacks(self, row: dict[str, Any]) -> yr_pb2.StacksReply:
        if not row.get("address"):
            raise LookupError(f"instance {row['id']} is {row['state']}: it has no live process")
        with self._channel(row["address"]) as channel:
            return yr_pb2_grpc.DebugStub(channel).Stacks(
                yr_pb2.StacksRequest(), metadata=self._metadata, timeout=RPC_TIMEOUT_S
            )


def live_sessions() -> list[LocalSession]:
    return [LocalSession(info) for info in discovery.sessions()]


class LocalBackend:
    """Every live local session of this user, one view each."""

    def __init__(self) -> None:
        self._sessions = {session.info.session_id: session for session in live_sessions()}

    def nothing_found(self) -> str:
        return "no live local yr session of this user (a driver between yr.init and finalize)"

    def views(self) -> list[dict[str, Any]]:
        views = []
        for session in self._sessions.values():
            try:
                view = session.snapshot()
            except grpc.RpcError:
                continue  # it finalized between the listing and the question
            view["title"] = f"driver pid={session.info.pid} ({session.info.program})"
            attach_waits(view, session.waits)
            views.append(view)
        return views

    def _session(self, view: dict[str, Any]) -> LocalSession:
        return self._sessions[view["session"]["id"]]

    def stacks(self, view: dict[str, Any], row: dict[str, Any]) -> yr_pb2.StacksReply:
        return self._session(view).stacks(row)

    def logs(
        self, view: dict[str, Any], row: dict[str, Any], *, after: int
    ) -> tuple[list[tuple[int, str]], bool]:
        reply = self._session(view).logs(row["id"], after=after)
        return [(line.number, line.text) for line in reply.lines], reply.ended
