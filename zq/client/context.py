"""The ZeroMQ side of a client: the context every client of a process shares, and
the DEALER socket of one client."""

from __future__ import annotations

import atexit
import contextlib
import os

import zmq

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


def dealer(endpoint: str) -> zmq.Socket[bytes]:
    """A client's DEALER socket, connected to ``endpoint`` (raises ``zmq.ZMQError``)."""
    sock = shared_context().socket(zmq.DEALER)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)  # the publish window and credit bound what we queue
        sock.setsockopt(zmq.RCVHWM, 0)
        # Our own routing id, so that the broker keeps our session across a ZeroMQ
        # reconnect (PROTOCOL.md section 3).
        sock.setsockopt(zmq.ROUTING_ID, b"zq-" + os.urandom(8))
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        sock.connect(endpoint)
    except zmq.ZMQError:
        sock.close(linger=0)
        raise
    return sock
