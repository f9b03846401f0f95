"""Instances for the `yr` command's tests: a tree of depth 3, one blocked and one dead."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time

import yr

SMALL = yr.InvokeOptions(cpu=100)


@yr.instance(invoke_options=SMALL)
class Leaf:
    def __init__(self) -> None:
        self._never = threading.Event()

    def block(self) -> None:
        self._never.wait()  # until the session ends

    def doze(self) -> None:
        time.sleep(600)  # user code busy in time.sleep, for `yr stack`


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100, concurrency=2))
class Middle:
    def __init__(self) -> None:
        self.leaf = Leaf.invoke()

    def leaf_id(self) -> str:
        return self.leaf.instance_id

    def wait_on_leaf(self) -> None:
        yr.get(self.leaf.block.invoke(), timeout=-1)  # blocked in yr.get on the leaf


@yr.instance(invoke_options=SMALL)
class Doomed:
    def die(self, code: int) -> None:
        for number in range(30):
            print(f"last words {number}", flush=True)
        print("exiting with code 3", file=sys.stderr, flush=True)
        os._exit(code)


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100, concurrency=2))
class Top:
    def __init__(self) -> None:
        self.middle = Middle.invoke()
        self.doomed = Doomed.invoke()

    def ids(self) -> dict[str, str]:
        return {
            "middle": self.middle.instance_id,
            "leaf": yr.get(self.middle.leaf_id.invoke()),
            "doomed": self.doomed.instance_id,
        }

    def start_blocking(self) -> None:
        self.middle.wait_on_leaf.invoke()  # not awaited: the middle stays blocked

    def kill_doomed(self) -> None:
        with contextlib.suppress(yr.YRError):
            yr.get(self.doomed.die.invoke(3))


class _Asker:
    """Asks its peer, which asks back: a cycle of waits in yr.get."""

    def __init__(self) -> None:
        self.peer = None

    def set_peer(self, peer) -> None:
        self.peer = peer

    def ask(self) -> str:
        return yr.get(self.peer.ask_back.invoke(), timeout=-1)

    def ask_back(self) -> str:
        return yr.get(self.peer.answer.invoke(), timeout=-1)

    def answer(self) -> str:
        return "answered"


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100, concurrency=1))
class SerialAsker(_Asker):
    pass


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100, concurrency=2))
class ConcurrentAsker(_Asker):
    pass


@yr.instance(invoke_options=SMALL)
class Talker:
    def say(self, text: str) -> None:
        print(text, flush=True)

    def say_and_die(self, text: str) -> None:
        print(text, flush=True)
        os._exit(5)
