"""A client connection's handshake refusals: say why, and dial again when libzmq gives
a connection up (it does not reconnect after a CURVE key was refused; the key may be
authorized again later)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import zmq

from zq.client.context import HandshakeWatch, dealer
from zq.errors import ConnectionLost
from zq.transport import fd

if TYPE_CHECKING:
    from zq.security.curve import ClientKeys

log = logging.getLogger("zq.client")

REDIAL_FIRST = 1.0  # seconds before dialling again a server that refused our key ...
REDIAL_MAX = 30.0  # ... doubling up to this


class Redial:
    """Part of :class:`zq.client.connection.Connection` (its socket and handshake)."""

    endpoint: str
    keys: ClientKeys | None
    closed: bool
    _loop: asyncio.AbstractEventLoop
    _sock: zmq.Socket[bytes] | None
    _watch: HandshakeWatch | None
    _welcome_fut: asyncio.Future[None] | None
    _redial_in: float

    def _on_readable(self) -> None:
        raise NotImplementedError

    def _refused(self, reason: str, final: bool) -> None:
        """The server refused the ZeroMQ handshake. While opening: fail open() now, with
        the reason. Later (a reconnect, after the key was revoked, say): say so, and if
        libzmq gives the connection up, dial again now and then (the key may be back)."""
        hint = ("give curve_secret and server_key (ZQ_CURVE_SECRET, ZQ_SERVER_KEY)"
                if self.keys is None else "check the key files")
        fut = self._welcome_fut
        if fut is not None and not fut.done():
            fut.set_exception(ConnectionLost(
                f"{self.endpoint} refused the connection: {reason}; {hint}",
                endpoint=self.endpoint))
            return
        if final and not self.closed:
            log.warning("%s refused the connection: %s; %s (trying again in %g s)",
                        self.endpoint, reason, hint, self._redial_in)
            self._loop.call_later(self._redial_in, self._redial)
            self._redial_in = min(REDIAL_MAX, self._redial_in * 2)

    def _redial(self) -> None:
        """A new socket, with the same routing id, for a connection libzmq gave up."""
        sock = self._sock
        if sock is None or self.closed:
            return
        rid = sock.getsockopt(zmq.ROUTING_ID)
        self._loop.remove_reader(fd(sock))
        if self._watch is not None:
            self._watch.close()
        sock.close(linger=0)
        sock = self._sock = dealer(self.endpoint, self.keys, rid)  # type: ignore[arg-type]
        self._watch = HandshakeWatch(sock, self._loop, self._refused)
        self._loop.add_reader(fd(sock), self._on_readable)
        self._loop.call_soon(self._on_readable)

