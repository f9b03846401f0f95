"""One Unix-socket connection from a caller to an instance: sends, and whoever reads replies.

A call is written by the thread that sends it, and its reply is read by whoever needs it
first: a ``yr.get`` waiting for that call reads the socket itself (``read_until``). Whenever
replies are due and no thread is reading, the connection's collector thread reads them, so a
call nobody waits for still settles.

A send never blocks: a ``concurrency=1`` instance reads its callers only between calls, so
while it runs a long one its socket buffer fills. What the kernel does not take waits, in
order, in the connection's backlog, which the collector writes out as the socket drains; a
sending thread (the shared flusher, a ``yr.get``) never waits behind a busy instance.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import socket
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable

import grpc

from yr.localcall import claims, colocation, spinning, wire

READ_BUFFER_BYTES = 1 << 16
SEND_BUFFER_BYTES = 4 << 20
# The longest a reader blocks in one recv before it looks at its deadline (and Python at a
# Ctrl-C that the kernel handed to another thread).
RECEIVE_SLICE_S = 0.2
# A bound shorter than a slice is cut to whole steps (the rest waits in a last, shorter
# slice), so waits with deadlines a fixed time ahead keep one bound: setting it is a syscall.
_BOUND_STEP_S = 0.01

# Called with the reply's bytes, or with the error that ended the call.
OnDone = Callable[[bytes, "LocalRpcError | None"], None]


class LocalRpcError(grpc.RpcError):
    """A failed local call, shaped like a failed gRPC call (``code()``, ``details()``)."""

    def __init__(
        self, code: grpc.StatusCode, details: str, *, never_delivered: bool = False
    ) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code = code
        self._details = details
        self.never_delivered = never_delivered  # the instance cannot have run it

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class Connection:
    """One socket to an instance: calls are written by their senders; replies are read by a
    thread that waits for one (``read_until``) or, when none does, by the collector.

    The collector watches the socket only while no thread holds the reading role (or a claim
    on it: yr/localcall/claims.py), so a reply read by the thread waiting for it wakes nobody
    else.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._socket = sock
        self._inbox = bytearray()  # bytes read and not yet taken as frames
        self._landing = bytearray(READ_BUFFER_BYTES)  # reused: no allocation per read
        self._write_lock = threading.Lock()
        # Frames the kernel did not take yet, in order (under _write_lock): (id, unsent bytes,
        # whether none of it was sent: such a call never reached the instance).
        self._backlog: deque[tuple[int, memoryview, bool]] = deque()
        # Under _write_lock: the highest request id whose frame went to the socket or the
        # backlog; a call above it had not been written when the connection failed.
        self._written_up_to = 0
        self._state = threading.Lock()
        # Under _state: the reading role is held by a reading thread or by a claim; the
        # collector watches the socket exactly while the role is free.
        self._reading = False
        self._claimed = False
        # Under _state: claims made so far, and which one the claim timer was armed for: when
        # it fires, only that one (unused all along) is ended, not a younger one.
        self._claims = 0
        self._timed_claim = 0
        # Under _state: the socket (both descriptors) is out of the collector's poller, after a
        # hang-up that came while a reader held the role (one is reported whatever the interest).
        self._parked = False
        self._pending: dict[int, OnDone] = {}
        self._ids = itertools.count(1)  # 0 is the connection itself (wire.CONNECTION_ID)
        self.failure: LocalRpcError | None = None
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poller = select.epoll()
        self._poller.register(self._wake_read, select.EPOLLIN)
        self._poller.register(sock.fileno(), select.EPOLLIN)
        # The same socket under a second descriptor, watched for room only while a backlog
        # waits: read and write interest change apart, from different threads.
        self._write_watch = os.dup(sock.fileno())
        self._poller.register(self._write_watch, 0)
        self._receive_timeout = 0.0  # the socket's SO_RCVTIMEO (0: none, blocks forever)
        self._spinner = spinning.Spinner(sock.fileno())  # used by the thread reading replies
        # The CPU the last reply was waited for on, asleep (colocation.py): said to the
        # instance with the next call, so that it waits for that call on this CPU too.
        self._waited_on: int | None = None
        self._sent_at = 0.0  # when the last call was written (monotonic)
        self._claim_timer = claims.ClaimTimer.make()  # None: senders never claim
        if self._claim_timer is not None:
            self._poller.register(self._claim_timer.fileno(), select.EPOLLIN)
        self._collector = threading.Thread(target=self._collect, name="yr-local-reply", daemon=True)
        self._collector.start()

    @classmethod
    def open(cls, path: str, hello: bytes) -> Connection:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # A concurrency=1 instance reads its callers only between calls: room for what is
        # sent meanwhile (the kernel caps it at net.core.wmem_max) before the backlog fills.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        try:
            sock.connect(path)
            sock.sendall(hello)  # the server reads no request before it
        except (FileNotFoundError, ConnectionRefusedError) as error:
            sock.close()  # nothing was sent: the caller may send it to the next incarnation
            raise LocalRpcError(
                grpc.StatusCode.UNAVAILABLE,
                f"connection refused by {path}: {error.strerror}",
                never_delivered=True,
            ) from None
        except OSError as error:
            sock.close()
            raise LocalRpcError(
                grpc.StatusCode.UNAVAILABLE, f"could not connect to {path}: {error}"
            ) from None
        return cls(sock)

    def send(self, body: bytes, on_done: OnDone, *, claim: bool = False) -> None:
        """Write the call now, or queue what the socket does not take: never blocks.

        With ``claim`` (its sender is likely to wait for it next) and nobody reading, the
        sender keeps the reading role from before the call leaves until its ``read_until``,
        or until the claim ends unused (yr/localcall/claims.py)."""
        with self._state:
            if self.failure is not None:  # nothing of it was written: it cannot have run
                raise LocalRpcError(
                    self.failure.code(), self.failure.details(), never_delivered=True
                )
            request_id = next(self._ids)
            self._pending[request_id] = on_done
            timer = self._claim_timer
            if claim and not self._reading and timer is not None:
                timing = not timer.armed  # else it is armed for an older claim
                if timer.arm():
                    self._reading = self._claimed = True
                    self._claims += 1
                    if timing:
                        self._timed_claim = self._claims
                    self._watch_replies_locked(False)
        data = wire.frame(request_id, wire.REQUEST, body)
        waited_on, self._waited_on = self._waited_on, None  # a hint: races lose nothing
        if waited_on is not None:
            waited = colocation.waited_frame_body(waited_on)
            data = wire.frame(wire.CONNECTION_ID, wire.WAITED, waited) + data
        try:
            with self._write_lock:
                if self.failure is not None:
                    return  # _fail came first and told on_done: never written, never delivered
                self._written_up_to = max(self._written_up_to, request_id)
                if self._backlog:  # frames before it still wait: keep the order
                    self._backlog.append((request_id, memoryview(data), True))
                    return
                sent = self._send_some(data)
                self._sent_at = time.monotonic()
                if sent < len(data):
                    self._backlog.append((request_id, memoryview(data)[sent:], sent == 0))
                    self._watch_room(True)
        except OSError as error:
            # Its frame is incomplete, so it never ran (a Unix socket whose instance exited
            # refuses the first byte); the calls before it may have.
            with self._state:
                mine = self._pending.pop(request_id, None) is not None
            self._fail(LocalRpcError(grpc.StatusCode.UNAVAILABLE, f"connection lost: {error}"))
            if not mine:  # a _fail in another thread took it first and has told its on_done
                return
            raise LocalRpcError(
                grpc.StatusCode.UNAVAILABLE,
                f"the instance closed its socket before the call was sent: {error}",
                never_delivered=True,
            ) from None

    def _send_some(self, data: bytes | memoryview) -> int:
        """As much of ``data`` as the kernel takes now (under _write_lock)."""
        try:
            return self._socket.send(data, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return 0

    def _flush_backlog(self) -> None:
        """On the collector, once the socket has room: write the waiting frames, in order."""
        try:
            with self._write_lock:
                while self._backlog:
                    request_id, data, untouched = self._backlog[0]
                    sent = self._send_some(data)
                    if sent < len(data):
                        self._backlog[0] = (request_id, data[sent:], untouched and sent == 0)
                        return
                    self._backlog.popleft()
                self._watch_room(False)
        except OSError as error:
            self._fail(LocalRpcError(grpc.StatusCode.UNAVAILABLE, f"connection lost: {error}"))

    def _watch_room(self, watch: bool) -> None:
        """Whether the collector wakes when the socket has room (under _write_lock)."""
        with self._state:
            if self.failure is None and not self._parked:  # else it is not in the poller
                self._poller.modify(self._write_watch, select.EPOLLOUT if watch else 0)

    def read_until(self, done: Callable[[], bool], deadline: float | None) -> None:
        """Read replies until ``done()`` or the monotonic ``deadline`` (None: no limit), if
        no other thread is reading; else return at once (the reading thread settles it)."""
        if not self._take_reading():
            return
        try:
            while not done() and self.failure is None:
                if not self._frame_buffered() and not self._received_by(deadline):
                    return
                self._read_one()
        finally:
            self._release_reading()

    def _frame_buffered(self) -> bool:
        inbox = self._inbox
        if len(inbox) < wire.FRAME.size:
            return False
        return len(inbox) >= wire.FRAME.size + wire.FRAME.unpack_from(inbox)[2]

    def _received_by(self, deadline: float | None) -> bool:
        """Wait for the next bytes until ``deadline``; False if none came in time or the
        connection failed.

        A prompt, lone caller first takes what is there, then polls for a moment
        (spinning.py): a partner that answers from its own CPU meanwhile costs no sleep. Then
        it sleeps in ``recv`` itself, not in ``poll``: a thread asleep in ``recv`` is woken by
        the sender's write as its partner (a synchronous wake-up); a ``poll`` waiter is woken
        like any other. And asleep on this CPU, where the instance then answers from too: on
        a virtual machine a cross-CPU wake-up costs an interrupt and an idle vCPU's wake-up per
        reply (colocation.py)."""
        # Only for a caller that waits at once: one that works meanwhile runs beside the call.
        cpu = None
        if colocation.prompt_lone_waiter(since_send=time.monotonic() - self._sent_at):
            cpu = colocation.current_cpu()
            if self._received_now():  # the instance, woken on this CPU, answered already
                self._waited_on = cpu
                return True
            # Polled for, it answered from its own CPU: no hint, so that it stays there.
            if self.failure is None and self._spinner.readable_soon() and self._received_now():
                return True
            if self.failure is not None:
                return False
        own = colocation.pin(cpu)  # asleep here: the instance answers from this CPU too
        try:
            received = self._receive_by(deadline)
        finally:
            colocation.unpin(own)  # before anything else runs on this thread
        if isinstance(received, BaseException):
            self._fail_lost(received)
            return False
        if received:
            self._waited_on = cpu
        return received

    def _receive_by(self, deadline: float | None) -> bool | BaseException:
        """Receive until bytes come (True) or ``deadline`` passes (False); or why the
        connection is lost."""
        while True:
            remaining = RECEIVE_SLICE_S
            if deadline is not None:
                remaining = min(remaining, deadline - time.monotonic())
                if remaining <= 0:
                    return False
                if remaining > _BOUND_STEP_S:  # whole steps: the same bound call after call
                    remaining -= remaining % _BOUND_STEP_S
            self._set_receive_timeout(max(remaining, 0.001))
            try:
                self._receive()
                return True
            except BlockingIOError:
                continue  # the slice ended: look at the deadline again
            except (OSError, EOFError) as error:
                return error

    def _received_now(self) -> bool:
        """Take what has arrived without waiting (a collector's wake-up may be stale: a reader
        may have taken those bytes meanwhile); False if nothing had, or the connection failed."""
        try:
            received = self._socket.recv_into(self._landing, 0, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError as error:
            self._fail_lost(error)
            return False
        if not received:
            self._fail_lost(EOFError())
            return False
        self._inbox += memoryview(self._landing)[:received]
        return True

    def _set_receive_timeout(self, seconds: float) -> None:
        """Bound the next blocking ``recv`` (a syscall only when the bound changes)."""
        if seconds != self._receive_timeout:
            wire.set_receive_timeout(self._socket, seconds)
            self._receive_timeout = seconds

    def _take_reading(self, *, collector: bool = False, hung_up: bool = False) -> bool:
        """Hold the reading role; a claim on it is taken over by any reader but the
        collector (which reads only what nobody is about to read), unless the instance hung up."""
        with self._state:
            if self.failure is not None:
                return False
            if self._reading:
                if not self._claimed or (collector and not hung_up):
                    return False
                self._claimed = False
                return True
            self._reading = True
            self._watch_replies_locked(False)
            return True

    def _release_reading(self) -> None:
        with self._state:
            self._free_role_locked()

    def end_claim(self) -> None:
        """Give the role back if a claim holds it: its timer fired, or a thread is going to
        wait for its call without reading."""
        with self._state:
            if self._claimed:
                self._free_role_locked()

    def _free_role_locked(self) -> None:
        self._reading = self._claimed = False
        if self.failure is not None:
            return
        # Level-triggered: the collector wakes at once if unread bytes wait in the socket (or
        # the instance closed it: an idle connection's end is noticed, too).
        if self._parked:  # nothing is written to a socket that hung up: no room to watch
            self._parked = False
            self._poller.register(self._socket.fileno(), select.EPOLLIN)
            self._poller.register(self._write_watch, 0)
        else:
            self._watch_replies_locked(True)
        if self._frame_buffered():
            self._wake_collector()  # a whole reply already read: the collector takes it

    def _watch_replies_locked(self, watch: bool) -> None:
        """Whether the collector wakes for replies: exactly while the role is free."""
        if self.failure is None and not self._parked:  # else it is not in the poller
            self._poller.modify(self._socket.fileno(), select.EPOLLIN if watch else 0)

    def _wake_collector(self) -> None:
        with contextlib.suppress(BlockingIOError):  # full: it is woken already
            os.write(self._wake_write, b"x")

    def _collect(self) -> None:
        """Read whatever arrives while no other thread reads, and write out the backlog as
        the socket drains; end with the connection."""
        while True:
            events = dict(self._poller.poll())
            with self._state:
                if self.failure is not None:  # its wake-up is written: nothing writes again
                    self._poller.close()
                    os.close(self._wake_read)
                    os.close(self._wake_write)
                    os.close(self._write_watch)
                    if self._claim_timer is not None:
                        self._claim_timer.close()
                    return
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_read, 4096)
            if self._claim_timer is not None and self._claim_timer.fileno() in events:
                self._claim_timer_fired()
            if self._write_watch in events:
                self._flush_backlog()
            if self._socket.fileno() not in events and self._wake_read not in events:
                continue  # nothing to read: a read now would find nothing
            # The instance is gone: nobody is about to read anything but its end, so a claim
            # is no reason to wait (and its hang-up, reported whatever the interest, would
            # wake this loop again and again until the claim ended).
            hung_up = events.get(self._socket.fileno(), 0) & (select.EPOLLHUP | select.EPOLLERR)
            if self._take_reading(collector=True, hung_up=bool(hung_up)):
                try:
                    if self._frame_buffered() or self._received_now():
                        self._read_one()
                finally:
                    self._release_reading()
            elif hung_up:
                self._park()

    def _park(self) -> None:
        """The instance hung up while a thread reads (running the callbacks of a reply, say):
        stop watching the socket until that thread lets the role go, rather than wake on the
        hang-up again and again meanwhile. The reader finds the end itself, or the collector
        does once the role is back (``_free_role_locked``)."""
        with self._state:
            if self._reading and self.failure is None and not self._parked:
                self._poller.unregister(self._socket.fileno())
                self._poller.unregister(self._write_watch)  # the same socket: it hung up too
                self._parked = True

    def _claim_timer_fired(self) -> None:
        """End the claim the timer was armed for if nobody has read under it yet: replies are
        the collector's again. A claim made since is young: the timer is armed for it."""
        timer = self._claim_timer
        assert timer is not None
        with self._state:  # claims arm it under _state
            timer.clear()
            if self.failure is not None:
                return
            if self._claimed and self._claims == self._timed_claim:  # unused all along
                timer.ended_a_claim()
                self._free_role_locked()
                return
            timer.back_off()  # every claim since it was armed is used, or young
            if not self._claimed:
                return
            if timer.arm():
                self._timed_claim = self._claims
            else:
                self._free_role_locked()

    def _read_one(self) -> None:
        try:
            request_id, kind, body = self._read_frame()
        except (OSError, EOFError, ValueError) as error:
            self._fail_lost(error)
            return
        if kind == wire.REFUSAL:
            code, message = wire.parse_refusal(body)
            if request_id == wire.CONNECTION_ID:
                self._fail(LocalRpcError(code, message))
                return
            self._settle(request_id, b"", LocalRpcError(code, message))
        else:
            self._settle(request_id, body, None)

    def _fail_lost(self, error: BaseException) -> None:
        reason = "the instance closed the connection" if isinstance(error, EOFError) else error
        self._fail(LocalRpcError(grpc.StatusCode.UNAVAILABLE, f"connection lost: {reason}"))

    def _read_frame(self) -> tuple[int, int, bytes]:
        inbox = self._inbox
        while len(inbox) < wire.FRAME.size:
            with contextlib.suppress(BlockingIOError):  # a receive slice ended: still due
                self._receive()
        request_id, kind, length = wire.FRAME.unpack_from(inbox)
        end = wire.FRAME.size + length
        if len(inbox) >= end:
            body = bytes(inbox[wire.FRAME.size : end])
            del inbox[:end]
            return request_id, kind, body
        # A large body is read straight into a buffer of its size, not through the inbox.
        large = bytearray(length)
        header = bytes(inbox[: wire.FRAME.size])
        have = len(inbox) - wire.FRAME.size
        large[:have] = inbox[wire.FRAME.size :]
        inbox.clear()
        view = memoryview(large)
        try:
            while have < length:
                try:
                    received = self._socket.recv_into(view[have:])
                except BlockingIOError:
                    continue  # a receive slice ended (SO_RCVTIMEO): the rest is still due
                if not received:
                    raise EOFError
                have += received
        except BaseException:  # a Ctrl-C mid-body: the next reader resumes this frame
            inbox += header + large[:have]
            raise
        return request_id, kind, large  # type: ignore[return-value]  # bytes-like is enough

    def _receive(self) -> None:
        """Read what has arrived, blocking until something does (BlockingIOError when a
        receive slice ends first)."""
        received = self._socket.recv_into(self._landing)
        if not received:
            raise EOFError
        self._inbox += memoryview(self._landing)[:received]

    def _settle(self, request_id: int, reply: bytes, error: LocalRpcError | None) -> None:
        with self._state:
            on_done = self._pending.pop(request_id, None)
        if on_done is not None:
            _run(on_done, reply, error)

    def _fail(self, error: LocalRpcError) -> None:
        """The connection is unusable: every call on it fails with ``error``."""
        with self._state:
            first = self.failure is None
            if first:
                self.failure = error
                self._wake_collector()  # it ends
            pending, self._pending = self._pending, {}
        with self._write_lock:
            unsent = {request_id for request_id, _, untouched in self._backlog if untouched}
            written_up_to = self._written_up_to
            self._backlog.clear()
        # A call still wholly in the backlog, or not written yet (its sender lost the race to
        # this failure), never reached the instance: it may go to the next incarnation.
        never_sent = LocalRpcError(error.code(), error.details(), never_delivered=True)
        for request_id, on_done in pending.items():
            never = request_id in unsent or request_id > written_up_to
            _run(on_done, b"", never_sent if never else error)
        if first:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)  # a blocked reader sees EOF
            self._socket.close()

    def close(self) -> None:
        self._fail(LocalRpcError(grpc.StatusCode.CANCELLED, "the channel was closed"))


def _run(on_done: OnDone, reply: bytes, error: LocalRpcError | None) -> None:
    """Settle one call; a failing callback must not stop the replies of the others."""
    try:
        on_done(reply, error)
    except Exception:
        traceback.print_exc()
