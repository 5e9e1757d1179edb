"""The thinnest Python hop in front of a zq broker: the floor under what a router adds.

``python -m perf hop --backend ENDPOINT`` binds a ROUTER socket for clients and, for
each client, opens one DEALER socket to the broker at ``ENDPOINT``: every message a
client sends goes on its DEALER as it came, every message from the broker goes back
to that client. No decoding, no routing by name, no FORWARD envelope, no session
state: the broker takes each DEALER for the client itself. Its loop is the router's
(a uvloop reader callback per socket, draining with NOBLOCK and forwarding in the turn
a message was read, with :mod:`zq.transport`'s helpers), so ``zq-hop`` in ``python -m
perf latency`` measures what one extra Python process on the path costs on this
machine, in the same run as ``zq-router`` (see perf/RESULTS.md, "Federation").
Prints ``HOP READY <endpoint>`` once bound; exits 0 on SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType

import zmq

from perf import server
from perf.server import Server
from zq.broker import run_loop
from zq.transport import fd, readable, recv_parts, send_parts

READY = "HOP READY "
_NOBLOCK = int(zmq.NOBLOCK)
_MORE = int(zmq.SNDMORE | zmq.NOBLOCK)
Socket = zmq.Socket[bytes]


class Hop:
    def __init__(self, ctx: zmq.Context[Socket], front: Socket, backend: str) -> None:
        self.ctx = ctx
        self.front = front
        self.backend = backend
        self.backs: dict[bytes, Socket] = {}  # client identity -> its DEALER to the broker
        self.loop = asyncio.get_running_loop()

    def on_front(self) -> None:
        written: set[bytes] = set()
        while True:
            try:
                msg = recv_parts(self.front)
            except zmq.Again:
                break
            back = self.backs.get(msg[0]) or self._open(msg[0])
            send_parts(back, msg[1:], _NOBLOCK)
            written.add(msg[0])
        for client in written:
            if readable(self.backs[client]):
                self.loop.call_soon(self.on_back, client)

    def on_back(self, client: bytes) -> None:
        back = self.backs[client]
        sent = False
        while True:
            try:
                msg = recv_parts(back)
            except zmq.Again:
                break
            try:
                self.front.send(client, _MORE)
                send_parts(self.front, msg, _NOBLOCK)
            except zmq.ZMQError:  # the client is gone: its answer is void
                continue
            sent = True
        if sent and readable(self.front):
            self.loop.call_soon(self.on_front)

    def _open(self, client: bytes) -> Socket:
        back = self.ctx.socket(zmq.DEALER)
        back.setsockopt(zmq.LINGER, 0)
        back.setsockopt(zmq.SNDHWM, 0)
        back.setsockopt(zmq.RCVHWM, 0)
        back.connect(self.backend)
        self.backs[client] = back
        self.loop.add_reader(fd(back), self.on_back, client)
        return back

    def close(self) -> None:
        for back in self.backs.values():
            self.loop.remove_reader(fd(back))
            back.close(linger=0)


def serve(bind: str, backend: str) -> int:
    ctx: zmq.Context[Socket] = zmq.Context()
    front = ctx.socket(zmq.ROUTER)
    try:
        front.setsockopt(zmq.LINGER, 0)
        front.setsockopt(zmq.SNDHWM, 0)
        front.setsockopt(zmq.RCVHWM, 0)
        front.setsockopt(zmq.ROUTER_MANDATORY, 1)
        front.bind(bind)
        run_loop(_serve(ctx, front, backend))
        return 0
    finally:
        front.close(linger=0)
        ctx.term()


async def _serve(ctx: zmq.Context[Socket], front: Socket, backend: str) -> None:
    loop = asyncio.get_running_loop()
    hop = Hop(ctx, front, backend)
    done = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: done.done() or done.set_result(None))
    loop.add_reader(fd(front), hop.on_front)
    try:
        sys.stdout.write(f"{READY}{front.getsockopt_string(zmq.LAST_ENDPOINT)}\n")
        sys.stdout.flush()
        await done
    finally:
        loop.remove_reader(fd(front))
        hop.close()


class HopCluster:
    """A zq broker with the hop in front (``zq-hop``): producers publish through the hop,
    consumers (``consumer_endpoint``) consume from the broker directly, as they do from
    a router's broker. CPU is both processes'; ``pid`` is the hop's."""

    def __init__(self, log_dir: Path, storage: str, data: Path) -> None:
        self.name = "zq broker behind the thinnest Python hop"
        self.broker = server.zq_broker(log_dir / "zq-hop-broker.log", storage, data)
        self.hop: Server | None = None
        self.log = log_dir / "zq-hop.log"
        self.endpoint = ""
        self.consumer_endpoint = ""

    def __enter__(self) -> HopCluster:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.kill()

    def _servers(self) -> list[Server]:
        return [s for s in (self.hop, self.broker) if s is not None]

    @property
    def pid(self) -> int:
        assert self.hop is not None
        return self.hop.pid

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        b = self.broker.proc
        if (b is not None and b.poll() is not None) or self.hop is None:
            return b
        return self.hop.proc

    def start(self, timeout: float = 15.0) -> str:
        self.consumer_endpoint = self.broker.start(timeout)
        self.hop = Server("hop", [sys.executable, "-m", "perf", "hop", "--bind",
                                  "tcp://127.0.0.1:*", "--backend", self.consumer_endpoint],
                          READY, self.log)
        self.endpoint = self.hop.start(timeout)
        return self.endpoint

    def cpu(self) -> float:
        return sum(s.cpu() for s in self._servers())

    def stop(self, within: float = 10.0) -> int:
        rcs = [s.stop(within) for s in self._servers()]
        return next((rc for rc in rcs if rc), 0)

    def kill(self) -> None:
        for s in self._servers():
            s.kill()

    def stderr(self) -> str:
        return "\n---\n".join(s.stderr() for s in self._servers())

