"""The ZeroMQ side of a client: the context every client of a process shares, and
the DEALER socket of one client."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import struct
from collections.abc import Callable

import zmq

from zq.security.curve import ClientKeys
from zq.transport import fd, monitor

_context: zmq.Context[zmq.Socket[bytes]] | None = None
_context_pid = 0


def shared_context() -> zmq.Context[zmq.Socket[bytes]]:
    """One ZeroMQ context per process for every client in it.

    A context per client would cost an I/O thread and its descriptors each
    (measured with 250 clients in one process: 501 threads, 1,770 descriptors).
    At exit the context is terminated, which lets closed sockets deliver their
    last frames (a BYE, a RELEASE) within their linger time. A forked child
    makes its own.
    """
    global _context, _context_pid
    if _context is None or _context_pid != os.getpid():
        _context = zmq.Context()
        _context_pid = os.getpid()
        atexit.register(_term, _context)
    return _context


def _term(ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    # destroy, not term: sockets a program never closed (their linger is 0) are
    # closed first, so exit never hangs; closed ones keep their linger.
    if not ctx.closed:
        with contextlib.suppress(zmq.ZMQError):
            ctx.destroy()


class HandshakeWatch:
    """Calls ``refused(reason, final)`` when the server refuses the socket's ZeroMQ
    handshake (no CURVE keys, an unknown key, a wrong server key). ``final``: the key
    was refused, and libzmq will not try this connection again by itself."""

    def __init__(self, sock: zmq.Socket[bytes], loop: asyncio.AbstractEventLoop,
                 refused: Callable[[str, bool], None]) -> None:
        self._sock = sock
        self._loop = loop
        self._refused = refused
        self._mon: zmq.Socket[bytes] | None = monitor(sock, FAILURES)
        loop.add_reader(fd(self._mon), self._read)
        loop.call_soon(self._read)  # (the descriptor is edge-triggered)

    def _read(self) -> None:
        mon = self._mon
        while mon is not None:
            try:
                head, _ = mon.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            event, value = struct.unpack("=HI", head[:6])
            if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self._refused("the server does not accept this key", True)
            elif event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                self._refused("it closed the connection during the handshake (with CURVE: "
                              "is the server key the server's?)", False)
            else:
                self._refused(_REASONS.get(value, "the handshake failed"), False)

    def close(self) -> None:
        mon, self._mon = self._mon, None
        if mon is not None:
            with contextlib.suppress(ValueError, OSError, zmq.ZMQError):
                self._loop.remove_reader(fd(mon))
            with contextlib.suppress(zmq.ZMQError):
                self._sock.disable_monitor()
            mon.close(linger=0)


FAILURES = (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH
            | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
_REASONS = {
    int(zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH):
        "the server uses another security mechanism (CURVE on one side only)",
    int(zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC): "the server key does not match the server",
}


def dealer(endpoint: str, keys: ClientKeys | None = None,
           routing_id: bytes | None = None) -> zmq.Socket[bytes]:
    """A client's DEALER socket, connected to ``endpoint`` (raises ``zmq.ZMQError``);
    with ``keys``, over CURVE."""
    sock = shared_context().socket(zmq.DEALER)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)  # the publish window and credit bound what we queue
        sock.setsockopt(zmq.RCVHWM, 0)
        # Our own routing id, so that the broker keeps our session across a ZeroMQ
        # reconnect (PROTOCOL.md section 3).
        sock.setsockopt(zmq.ROUTING_ID, routing_id or b"zq-" + os.urandom(8))
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        if keys is not None:
            keys.apply(sock)
        sock.connect(endpoint)
    except zmq.ZMQError:
        sock.close(linger=0)
        raise
    return sock
