"""The baseline relay: one ROUTER socket, no broker logic, no decoding.

Frames (after the ROUTER's identity part)::

    consumer -> relay   [b"H"]                         hello, any queue; answered [b"W"]
    consumer -> relay   [b"H", queue, ...]             hello for these queues only; [b"W"]
    producer -> relay   [b"M", seq, body, ...]         forwarded as [producer, b"M", seq, body...]
                                                       to the next any-queue consumer, round robin
    producer -> relay   [b"Q", queue, seq, body, ...]  forwarded as [producer, b"Q", queue, seq,
                                                       body...] to the next consumer of that
                                                       queue (else of any queue), round robin
    consumer -> relay   [b"A", producer, seq]          forwarded to the producer as [b"A", seq]
    anyone   -> relay   [b"P"]                         answered [b"P"] (a connection check)

``M`` is the one-queue form every baseline used first; ``Q`` costs one more part and
a dict lookup per message, as a queue name costs the broker (``throughput --queues``,
``queues``). The relay routes by name and keeps nothing else per queue.

Two loops, both draining the socket with NOBLOCK: ``poll`` (a plain blocking
``zmq_poll`` loop) and ``asyncio`` (a uvloop reader callback, as the broker
does). Two ways to move the parts of a message: ``multipart`` uses
``recv_multipart``/``send_multipart`` as the broker does; ``parts`` calls
``recv``/``send`` once per part with plain-int flags, which skips pyzmq's
per-part ``IntFlag`` arithmetic and ``RCVMORE`` lookups (see perf/RESULTS.md).
``python -m perf relay`` prints ``RELAY READY <endpoint>`` once bound and exits 0
on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

import zmq

from zq.broker import run_loop
from zq.transport import fd, readable

READY = "RELAY READY "
HELLO, WELCOME, MSG, ACK = b"H", b"W", b"M", b"A"
QMSG, PING = b"Q", b"P"
_NOBLOCK = int(zmq.NOBLOCK)  # plain ints: pyzmq's Flag arithmetic costs ~1 us per part
_MORE = int(zmq.SNDMORE) | _NOBLOCK


def dealer(ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> zmq.Socket[bytes]:
    """A baseline client's socket: a DEALER with no linger and no high-water marks,
    connected to the relay at ``endpoint``."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.connect(endpoint)
    return sock


@contextlib.contextmanager
def dealer_alone(endpoint: str) -> Iterator[zmq.Socket[bytes]]:
    """:func:`dealer` in a zmq.Context of its own; closes both on leaving."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = dealer(ctx, endpoint)
    try:
        yield sock
    finally:
        sock.close(linger=0)
        ctx.term()


class Relay:
    def __init__(self, sock: zmq.Socket[bytes], io: str = "multipart") -> None:
        self.sock = sock
        self.drain = self.drain_multipart if io == "multipart" else self.drain_parts
        self.consumers: list[bytes] = []  # consumers of any queue
        self.routes: dict[bytes, list[bytes]] = {}  # queue -> its consumers
        self.parked: list[list[bytes]] = []  # messages that arrived before their consumer
        self.turn = 0
        self.stopping = False

    def drain_multipart(self) -> None:
        """Forward every message waiting on the socket (recv_multipart/send_multipart)."""
        recv = self.sock.recv_multipart
        send = self.sock.send_multipart
        consumers = self.consumers
        noblock = zmq.NOBLOCK
        while True:
            try:
                msg = recv(noblock)
            except zmq.Again:
                break
            kind = msg[1]
            if kind == MSG:
                if consumers:
                    self.turn += 1
                    send([consumers[self.turn % len(consumers)], *msg], copy=False)
                else:
                    self.parked.append(msg)
            elif kind == ACK:  # [consumer, b"A", producer, seq]
                send([msg[2], ACK, msg[3]], copy=False)
            elif kind == QMSG:  # [producer, b"Q", queue, seq, body...]
                to = self._route(msg[2])
                if to is None:
                    self.parked.append(msg)
                else:
                    send([to, *msg], copy=False)
            elif kind == HELLO:
                self._hello(msg[0], msg[2:], send)
            elif kind == PING:
                send([msg[0], PING])

    def drain_parts(self) -> None:
        """Forward every message waiting on the socket, one recv/send call per part."""
        sock = self.sock
        recv = sock.recv
        send = sock.send
        consumers = self.consumers
        while True:
            try:
                frame = recv(_NOBLOCK, copy=False)
            except zmq.Again:
                break
            msg = [frame.bytes]
            while frame.more:
                frame = recv(_NOBLOCK, copy=False)
                msg.append(frame.bytes)
            kind = msg[1]
            if kind == MSG:
                if consumers:
                    self.turn += 1
                    send(consumers[self.turn % len(consumers)], _MORE)
                    for part in msg[:-1]:
                        send(part, _MORE)
                    send(msg[-1], _NOBLOCK)
                else:
                    self.parked.append(msg)
            elif kind == ACK:
                send(msg[2], _MORE)
                send(ACK, _MORE)
                send(msg[3], _NOBLOCK)
            elif kind == QMSG:
                to = self._route(msg[2])
                if to is None:
                    self.parked.append(msg)
                else:
                    send(to, _MORE)
                    for part in msg[:-1]:
                        send(part, _MORE)
                    send(msg[-1], _NOBLOCK)
            elif kind == HELLO:
                self._hello(msg[0], msg[2:], sock.send_multipart)
            elif kind == PING:
                sock.send_multipart([msg[0], PING])

    def _route(self, queue: bytes) -> bytes | None:
        """The next consumer for a message to ``queue`` (round robin), None if it has none."""
        cs = self.routes.get(queue) or self.consumers
        if not cs:
            return None
        self.turn += 1
        return cs[self.turn % len(cs)]

    def _hello(self, consumer: bytes, queues: list[bytes], send: Callable[..., Any]) -> None:
        if queues:
            for q in queues:
                self.routes.setdefault(q, []).append(consumer)
        else:
            self.consumers.append(consumer)
        send([consumer, WELCOME])
        parked, self.parked = self.parked, []
        for m in parked:
            to = self._route(m[2]) if m[1] == QMSG else (
                self.consumers[0] if self.consumers else None)
            if to is None:
                self.parked.append(m)
            else:
                send([to, *m])


def serve(bind: str, mode: str, io: str = "multipart") -> int:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)  # producers' windows bound what is queued
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.bind(bind)
        relay = Relay(sock, io)
        endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        if mode == "poll":
            _serve_poll(relay, endpoint)
        else:
            run_loop(_serve_asyncio(relay, endpoint))
        return 0
    finally:
        sock.close(linger=0)
        ctx.term()


def _announce(endpoint: str) -> None:
    sys.stdout.write(f"{READY}{endpoint}\n")
    sys.stdout.flush()


def _serve_poll(relay: Relay, endpoint: str) -> None:
    def stop(signum: int, frame: Any) -> None:
        relay.stopping = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    _announce(endpoint)
    sock = relay.sock
    while not relay.stopping:
        if sock.poll(100, zmq.POLLIN):
            relay.drain()


async def _serve_asyncio(relay: Relay, endpoint: str) -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    sock = relay.sock

    def on_readable() -> None:
        relay.drain()
        if readable(sock):  # sending can swallow the descriptor's edge
            loop.call_soon(on_readable)

    def stop() -> None:
        if not done.done():
            done.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    loop.add_reader(fd(sock), on_readable)
    try:
        _announce(endpoint)
        on_readable()
        await done
    finally:
        loop.remove_reader(fd(sock))
