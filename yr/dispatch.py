"""How an instance server orders and runs calls: per-caller sequence, one method thread."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import queue
import select
import socket
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import grpc

from yr.futures import settle

# A caller whose seq numbers have a gap this long (a lost call) is let through anyway.
SEQUENCE_GAP_TIMEOUT_S = 30.0
# How long the method thread may wait in a caller's socket for its next call (``linger``):
# long enough for a caller that calls again at once, short enough that work arriving another
# way meanwhile (the queue, another socket) is not held up. The kernel rounds a receive
# timeout up to a scheduler tick, so in practice it is one tick (1-4 ms).
LINGER_S = 0.001
# Once a second caller (another socket, or work through the queue) is seen, the thread does
# not linger for this long: with several callers active, each linger would hold the others
# up by a tick, so they are all served from the selector, in turn, as they arrive.
SHARED_QUIET_S = 0.05

Item = TypeVar("Item")


class CallRefused(Exception):
    """A batch refused before anything in it ran; each transport reports it its own way."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class CallOrder(Generic[Item]):
    """Admits each caller's batches strictly in their seq order, whatever order they arrive in.

    Bookkeeping only, for one thread: the owner starts, in the order given, every item that
    ``admit`` or ``overdue`` returns (the event loop for gRPC and ``concurrency`` > 1, the
    method thread for a ``concurrency=1`` instance's local callers).
    """

    def __init__(self, gap_timeout_s: float = SEQUENCE_GAP_TIMEOUT_S) -> None:
        self._gap_timeout_s = gap_timeout_s
        self._next: dict[str, int] = {}
        self._parked: dict[str, dict[int, tuple[float, Item]]] = {}

    def admit(self, caller: str, seq: int, item: Item, *, settled_below: int = 0) -> list[Item]:
        """What starts now: ``item`` if its turn has come (else it waits for the caller's
        earlier batches), and any waiting batch that follows. Batches below
        ``settled_below`` the caller has given up on (answered, or never sent)."""
        ready: list[Item] = []
        expected = max(self._next.get(caller, 0), settled_below)
        self._next[caller] = expected
        if seq <= expected:
            ready.append(item)
            self._next[caller] = max(expected, seq + 1)
        else:
            deadline = time.monotonic() + self._gap_timeout_s
            self._parked.setdefault(caller, {})[seq] = (deadline, item)
        self._release(caller, ready)
        return ready

    def overdue(self) -> list[Item]:
        """Waiting batches whose gap has lasted too long: let through, the missing ones given
        up on."""
        now = time.monotonic()
        ready: list[Item] = []
        for caller, parked in list(self._parked.items()):
            for seq in sorted(parked):
                if seq in parked and parked[seq][0] <= now:
                    ready.append(parked.pop(seq)[1])
                    self._next[caller] = seq + 1
                    self._release(caller, ready)
        return ready

    def next_deadline(self) -> float | None:
        """When ``overdue`` next has something to let through (monotonic), if ever."""
        if not self._parked:
            return None
        parked = self._parked.values()
        return min((deadline for each in parked for deadline, _ in each.values()), default=None)

    def _release(self, caller: str, ready: list[Item]) -> None:
        parked = self._parked.get(caller)
        while parked and self._next[caller] in parked:
            seq = self._next[caller]
            ready.append(parked.pop(seq)[1])
            self._next[caller] = seq + 1
        if parked is not None and not parked:
            del self._parked[caller]


class LoopCallOrder:
    """A ``CallOrder`` for the event loop: ``admit`` returns once the batch's turn has come."""

    def __init__(self) -> None:
        self._order: CallOrder[asyncio.Future[None]] = CallOrder()
        self._timer: asyncio.TimerHandle | None = None

    async def admit(self, caller: str, seq: int, *, settled_below: int = 0) -> None:
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._start(self._order.admit(caller, seq, turn, settled_below=settled_below))
        await asyncio.shield(turn)  # a cancelled caller does not leave a gap behind

    def _start(self, ready: list[asyncio.Future[None]]) -> None:
        for turn in ready:
            if not turn.done():
                turn.set_result(None)
        deadline = self._order.next_deadline()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(
                loop.time() + max(0.0, deadline - time.monotonic()), self._expire
            )

    def _expire(self) -> None:
        self._timer = None
        self._start(self._order.overdue())


class SerialRunner:
    """The one thread that runs a ``concurrency=1`` instance's ``__init__`` and calls.

    Work reaches it two ways: through its queue (``submit``/``post``, from the event loop),
    and from sockets it watches itself (``watch``: local callers' connections, read and
    answered on this thread, so a call costs no thread hop in the instance).
    """

    _lingering: Callable[[float], None] | None = None
    _last_caller: int | None = None  # the socket whose calls the thread served last
    _shared_until = 0.0  # monotonic: no lingering before, as other work came meanwhile

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._wake_write.setblocking(False)
        # epoll itself, not ``selectors``: the thread looks at it once or twice per call.
        self._poller = select.epoll()
        self._poller.register(self._wake_read.fileno(), select.EPOLLIN)
        self._watched: dict[int, tuple[Callable[[], None], Callable[[], None] | None]] = {}
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_ids = itertools.count()
        self._thread = threading.Thread(target=self._run, name="yr-method", daemon=True)
        self._thread.start()

    def submit(self, function: Callable[..., Any], *args: Any) -> asyncio.Future:
        future = self._loop.create_future()
        self._put((future, function, args))
        return future

    def post(self, function: Callable[..., Any], *args: Any) -> None:
        """Run ``function`` on the thread, in turn, and tell the loop nothing: it hands on its
        own result (a reply written straight to its caller's socket)."""
        self._put((None, function, args))

    def watch(self, sock: socket.socket, on_readable: Callable[[], None]) -> None:
        """On this thread only: call ``on_readable`` here whenever ``sock`` has bytes."""
        self._poller.register(sock.fileno(), select.EPOLLIN)
        self._watched[sock.fileno()] = (on_readable, None)

    def watch_writable(self, sock: socket.socket, on_writable: Callable[[], None] | None) -> None:
        """On this thread only: also call ``on_writable`` whenever the watched ``sock`` has
        room to write (None: no longer)."""
        descriptor = sock.fileno()
        on_readable = self._watched[descriptor][0]
        self._poller.modify(descriptor, select.EPOLLIN | (select.EPOLLOUT if on_writable else 0))
        self._watched[descriptor] = (on_readable, on_writable)

    def linger(self, sock: socket.socket, wait_for_more: Callable[[float], None]) -> None:
        """On this thread only, after serving calls that came on ``sock``: before it next
        sleeps in its selector with nothing to do, the thread calls ``wait_for_more`` once,
        which may block in that socket for at most the seconds it is given (``LINGER_S``, or
        less before a timer) and serve what comes; unless other callers were served lately."""
        descriptor = sock.fileno()
        if descriptor != self._last_caller:
            if self._last_caller is not None:
                self._others_came()
            self._last_caller = descriptor
        self._lingering = wait_for_more

    def unwatch(self, sock: socket.socket) -> None:
        """On this thread only, before ``sock`` is closed."""
        descriptor = sock.fileno()
        if self._watched.pop(descriptor, None) is not None:
            with contextlib.suppress(OSError):
                self._poller.unregister(descriptor)

    def call_at(self, deadline: float, function: Callable[[], None]) -> None:
        """On this thread only: run ``function`` here at the monotonic ``deadline``."""
        heapq.heappush(self._timers, (deadline, next(self._timer_ids), function))

    def _put(self, item: Any) -> None:
        self._queue.put(item)
        # Full: the thread is woken already; closed: it has stopped, nothing runs any more.
        with contextlib.suppress(OSError):
            self._wake_write.send(b"x")

    def _run(self) -> None:
        try:
            while self._serve_once():
                pass
        finally:
            self._poller.close()
            self._wake_read.close()
            self._wake_write.close()

    def _serve_once(self) -> bool:
        timeout = -1.0 if not self._timers else max(0.0, self._timers[0][0] - time.monotonic())
        lingering, self._lingering = self._lingering, None
        ready = self._poller.poll(0 if lingering is not None else timeout)
        if (
            lingering is not None
            and not ready
            and timeout != 0
            and self._queue.empty()
            and time.monotonic() >= self._shared_until
        ):
            lingering(LINGER_S if timeout < 0 else min(LINGER_S, timeout))
            return True
        for descriptor, events in ready:
            callbacks = self._watched.get(descriptor)
            if callbacks is None:  # the wake-up (or a socket unwatched by a callback just now)
                with contextlib.suppress(BlockingIOError):
                    self._wake_read.recv(4096)
                continue
            on_readable, on_writable = callbacks
            if events & select.EPOLLOUT and on_writable is not None:
                _run_reporting(on_writable)
            if events & ~select.EPOLLOUT:  # bytes, or the peer's end: the read says which
                _run_reporting(on_readable)
        while self._timers and self._timers[0][0] <= time.monotonic():
            _run_reporting(heapq.heappop(self._timers)[2])
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return True
            if item is None:
                return False
            self._run_item(*item)

    def _others_came(self) -> None:
        self._shared_until = time.monotonic() + SHARED_QUIET_S

    def _run_item(self, future: asyncio.Future | None, function: Callable, args: tuple) -> None:
        if future is None:  # posted: this thread's own business, such as a new connection
            _run_reporting(function, *args)
            return
        self._others_came()  # a call through the loop (gRPC), competing with the sockets
        try:
            result = function(*args)
        except BaseException as error:
            self._loop.call_soon_threadsafe(functools.partial(settle, future, error=error))
        else:
            self._loop.call_soon_threadsafe(functools.partial(settle, future, result=result))

    def stop(self) -> None:
        self._put(None)


def _run_reporting(function: Callable[..., Any], *args: Any) -> None:
    try:
        function(*args)
    except BaseException:
        traceback.print_exc()
