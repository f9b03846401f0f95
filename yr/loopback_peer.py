"""Which user holds the other end of a loopback TCP connection (TCP has no SO_PEERCRED).

The kernel is asked for exactly that socket over netlink (sock_diag), a lookup that costs
tens of microseconds however many sockets the machine has; where netlink is refused (some
sandboxes), its socket tables in /proc/net are read instead.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from typing import Any

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLMSG_ERROR = 2
_NLM_F_REQUEST = 1
_NO_COOKIE = 0xFFFFFFFF
_ALL_STATES = 0xFFFFFFFF
_NLMSG_HEADER = struct.Struct("=IHHII")
_INET_DIAG_REQ = struct.Struct("=BBBBI")
_UID_OFFSET = _NLMSG_HEADER.size + 4 + 48 + 12  # family..retrans, sockid, expires..wqueue


def peer_uid(connection: Any) -> int | None:
    """The user owning the other end of the TCP ``connection`` on this machine, or None if
    the kernel lists no such socket (it has closed, or is on another machine)."""
    try:
        theirs, ours = connection.getpeername()[:2], connection.getsockname()[:2]
    except OSError:  # it has gone already
        return None
    try:
        return uid_from_sock_diag(connection.family, theirs, ours)
    except OSError:
        return uid_from_proc(connection.family, theirs, ours)


def uid_from_sock_diag(family: int, local: tuple[str, int], remote: tuple[str, int]) -> int | None:
    """The owner of the TCP socket bound to ``local`` and connected to ``remote``. An IPv4
    lookup also finds a dual-stack IPv6 socket using IPv4-mapped addresses (gRPC's own)."""
    sockid = struct.pack(
        "!HH16s16s", local[1], remote[1], _padded(family, local[0]), _padded(family, remote[0])
    ) + struct.pack("=III", 0, _NO_COOKIE, _NO_COOKIE)
    request = _INET_DIAG_REQ.pack(family, socket.IPPROTO_TCP, 0, 0, _ALL_STATES) + sockid
    header = _NLMSG_HEADER.pack(
        _NLMSG_HEADER.size + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, 1, 0
    )
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as netlink:
        netlink.sendall(header + request)
        reply = netlink.recv(8192)
    _, kind, _, _, _ = _NLMSG_HEADER.unpack_from(reply)
    if kind == _NLMSG_ERROR:
        (error,) = struct.unpack_from("=i", reply, _NLMSG_HEADER.size)
        if -error == errno.ENOENT:  # no such socket
            return None
        raise OSError(-error, f"sock_diag refused the lookup: {os.strerror(-error)}")
    return struct.unpack_from("=I", reply, _UID_OFFSET)[0]


def uid_from_proc(family: int, local: tuple[str, int], remote: tuple[str, int]) -> int | None:
    """The same, from /proc/net/tcp{,6}: the row with these local and remote addresses. An
    IPv4 connection's other end may be listed in tcp6, with IPv4-mapped addresses."""
    if family == socket.AF_INET:
        tables = {
            "/proc/net/tcp6": (_in_table(local, mapped=True), _in_table(remote, mapped=True)),
            "/proc/net/tcp": (_in_table(local), _in_table(remote)),
        }
    elif family == socket.AF_INET6:
        tables = {"/proc/net/tcp6": (_in_table(local), _in_table(remote))}
    else:
        return None
    for table, addresses in tables.items():
        try:
            with open(table) as rows:
                next(rows)  # the header
                for row in rows:
                    fields = row.split()
                    if (fields[1], fields[2]) == addresses:
                        return int(fields[7])
        except OSError:
            continue
    return None


def _padded(family: int, host: str) -> bytes:
    packed = socket.inet_pton(family, host)
    return packed + bytes(16 - len(packed))


def _in_table(address: tuple[str, int], *, mapped: bool = False) -> str:
    """``address`` as /proc/net/tcp{,6} prints it: the IP's 32-bit words in host byte order
    (little-endian here), then the port, in upper-case hex; ``mapped``: an IPv4 address as
    the IPv6 address ::ffff:a.b.c.d."""
    host, port = address
    if ":" in host:
        packed = socket.inet_pton(socket.AF_INET6, host)
    elif mapped:
        packed = bytes(10) + b"\xff\xff" + socket.inet_aton(host)
    else:
        packed = socket.inet_aton(host)
    words = b"".join(packed[i : i + 4][::-1] for i in range(0, len(packed), 4))
    return f"{words.hex().upper()}:{port:04X}"
