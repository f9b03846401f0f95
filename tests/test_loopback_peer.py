"""The user at the other end of a loopback TCP connection, as the kernel reports it."""

from __future__ import annotations

import os
import socket

import pytest

from yr.loopback_peer import peer_uid, uid_from_proc, uid_from_sock_diag


@pytest.mark.parametrize("lookup", [uid_from_sock_diag, uid_from_proc], ids=["netlink", "proc"])
@pytest.mark.parametrize("client", ["ipv4", "dual-stack"])
def test_the_peer_of_a_loopback_connection_is_found_to_be_this_user(lookup, client):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        family, host = (
            (socket.AF_INET, "127.0.0.1")
            if client == "ipv4"
            else (socket.AF_INET6, "::ffff:127.0.0.1")  # as gRPC's own clients connect
        )
        with socket.socket(family) as dialler:
            dialler.connect((host, port))
            accepted, _ = listener.accept()
            with accepted:
                theirs, ours = accepted.getpeername(), accepted.getsockname()
                assert lookup(socket.AF_INET, theirs, ours) == os.geteuid()
                assert peer_uid(accepted) == os.geteuid()


def test_no_peer_is_found_for_a_connection_that_does_not_exist():
    assert uid_from_sock_diag(socket.AF_INET, ("127.0.0.1", 1), ("127.0.0.1", 2)) is None
    assert uid_from_proc(socket.AF_INET, ("127.0.0.1", 1), ("127.0.0.1", 2)) is None
