"""A TCP relay on loopback that a test can cut: a network path under the test's control.

``TcpRelay(target_port)`` listens on a free loopback port and forwards each connection
to ``127.0.0.1:target_port``, byte for byte, both ways. :meth:`TcpRelay.cut` turns it
into a blackhole and :meth:`TcpRelay.heal` back into a pass-through. Connections stay
open across a cut: neither side is told anything, they just stop hearing the other.

Two kinds of blackhole:

* ``"drop"`` (the default): bytes read on either side are discarded. What reaches the
  other side after the heal starts wherever the stream then is, as after a middlebox
  that lost the connection's state; a peer that keeps using such a connection reads
  garbage or nothing, so it has to open a new one.
* ``"hold"``: nothing is read while cut (the kernel's buffers fill, and the senders'
  queues behind them); after the heal everything flows on in order, late. That is what
  TCP makes of packets dropped for a few seconds: it sends them again.

:meth:`TcpRelay.forget` is the third kind, for good and for the connections open now
only: as a stateful firewall or NAT that lost their state, it drops their bytes and
their closes for ever (neither side learns of it but by silence: TCP would give up
after many minutes), while new connections pass.

Either way a connection opened during a cut (its SYN would be dropped and sent again)
is accepted but not connected on until the heal, and nothing it sent is lost, and a
side that closes during a cut has its close passed on at the heal (its FIN, too, is
sent again). Everything runs on the test's event loop; :meth:`TcpRelay.close` ends
every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Literal

Mode = Literal["pass", "drop", "hold"]
LOOPBACK = ("127.0.0.1", "::1")


class _Side(asyncio.Protocol):
    """One TCP connection of a pipe: the client's (accepted) or the target's."""

    def __init__(self, pipe: _Pipe) -> None:
        self.pipe = pipe
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.pipe.side_made(self)

    def data_received(self, data: bytes) -> None:
        self.pipe.data(self, data)

    def eof_received(self) -> bool:
        self.pipe.side_closed(self)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.pipe.side_closed(self)

    def pause(self, on: bool) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            (t.pause_reading if on else t.resume_reading)()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class _Pipe:
    """A client connection and its connection to the target."""

    def __init__(self, relay: TcpRelay) -> None:
        self.relay = relay
        self.client = _Side(self)
        self.target: _Side | None = None
        self.closing = False  # a side closed: the other is closed when the path is up
        self.dead = False  # forgotten: nothing passes any more, not even a close

    def side_made(self, side: _Side) -> None:
        if side is self.client:
            self.relay.pipes.add(self)
            side.pause(True)  # until the target's side is there (at the heal, if cut)
            if self.relay.mode == "pass":
                self.relay.spawn(self.connect())

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        target = _Side(self)
        try:
            await loop.create_connection(lambda: target, "127.0.0.1", self.relay.target_port)
        except OSError:
            self.client.close()  # the target does not listen: as a refused connection
            return
        self.target = target
        self.apply(self.relay.mode)

    def apply(self, mode: Mode) -> None:
        """Read both sides (to pass or to drop), or neither (``hold``)."""
        for side in (self.client, self.target):
            if side is not None:
                side.pause(mode == "hold")

    def other(self, side: _Side) -> _Side | None:
        return self.target if side is self.client else self.client

    def data(self, side: _Side, data: bytes) -> None:
        other = self.other(side)
        if self.dead or self.relay.mode != "pass" or other is None or other.transport is None:
            self.relay.dropped += len(data)  # "drop" or dead (a "hold" side does not read)
            return
        self.relay.passed += len(data)
        other.transport.write(data)

    def side_closed(self, side: _Side) -> None:
        self.closing = True
        if self.relay.mode == "pass" and not self.dead:
            self.close()

    def close(self) -> None:
        self.client.close()
        if self.target is not None:
            self.target.close()
        self.relay.pipes.discard(self)

    def heal(self) -> None:
        if self.dead:
            return
        if self.closing:
            self.close()
        elif self.target is None:
            self.relay.spawn(self.connect())  # reads once connected
        else:
            self.apply("pass")


class TcpRelay:
    """Forwards a free loopback port to ``target_port`` (see the module docstring)."""

    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        if host not in LOOPBACK:
            raise ValueError(f"a test relay listens on loopback only, not {host!r}")
        self.host = host
        self.target_port = target_port
        self.port = 0
        self.mode: Mode = "pass"
        self.pipes: set[_Pipe] = set()
        self.passed = 0  # bytes forwarded
        self.dropped = 0  # bytes discarded during "drop" cuts
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def endpoint(self) -> str:
        """The relay as a ZeroMQ endpoint."""
        return f"tcp://{self.host}:{self.port}"

    async def start(self) -> TcpRelay:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Pipe(self).client, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def spawn(self, coro: Coroutine[None, None, None]) -> None:
        """A connect task, owned by the relay (cancelled by :meth:`close`)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cut(self, mode: Literal["drop", "hold"] = "drop") -> None:
        """Blackhole the path from now on: discard (``drop``) or stop reading (``hold``)."""
        if mode not in ("drop", "hold"):
            raise ValueError(f"a cut is 'drop' or 'hold', not {mode!r}")
        self.mode = mode
        for pipe in self.pipes:
            if pipe.target is not None:
                pipe.apply(mode)

    def heal(self) -> None:
        """Pass bytes again; closes made during the cut are passed on now."""
        self.mode = "pass"
        for pipe in list(self.pipes):
            pipe.heal()

    def forget(self) -> None:
        """The connections open now pass nothing any more, for good; new ones pass."""
        for pipe in self.pipes:
            pipe.dead = True
            pipe.apply("drop")

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for pipe in list(self.pipes):
            pipe.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task
        if self._server is not None:
            await self._server.wait_closed()
