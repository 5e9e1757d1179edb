"""Small typed helpers for driving a plain pyzmq socket from an asyncio loop.

zq does not use ``zmq.asyncio``: it waits on the socket's file descriptor and
then reads with NOBLOCK until the socket is empty, so one wake-up handles
every queued message. The descriptor is edge-triggered, so after sending we
must check :func:`readable` before waiting on it again.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Callable
from typing import Any, cast

import zmq

from zq.protocol.limits import PART_SLACK


def serve_options(sock: zmq.Socket[Any], *, hwm: int, max_frame: int, backlog: int) -> None:
    """The options of a server's ROUTER socket (broker and router alike): unroutable
    sends fail instead of vanishing, no linger, the high-water marks, the largest
    message, and the listen backlog (libzmq's default of 100 makes a burst of 1,000
    connecting clients retry a second later)."""
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    # Per part: a single part a little over max_frame is read, and the decoder answers
    # FRAME_TOO_LARGE; a larger one is refused from its size field, before it is read.
    sock.setsockopt(zmq.MAXMSGSIZE, max_frame + PART_SLACK)
    sock.setsockopt(zmq.BACKLOG, backlog)
    # A ZAP domain makes libzmq refuse ZMTP 1.0 and 2.0 peers at the handshake: random
    # bytes would otherwise parse as old-protocol messages (measured: 200 connections
    # of 2,000 random bytes became 1,262 frames at the socket; with the domain, none).
    # Without a CURVE server it asks no authenticator: NULL peers are let in as before.
    sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN)


def fd(sock: zmq.Socket[Any]) -> int:
    """The socket's file descriptor, for ``loop.add_reader``."""
    return cast(int, sock.getsockopt(zmq.FD))


def readable(sock: zmq.Socket[Any]) -> bool:
    """Whether a message is waiting (also re-arms the edge-triggered descriptor)."""
    return bool(cast(int, sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN)


ZAP_DOMAIN = b"zq"  # the ZAP domain of zq's server sockets (zq.security.auth)

_NOBLOCK = int(zmq.NOBLOCK)
_MORE = int(zmq.SNDMORE)


def recv_parts(sock: zmq.Socket[Any]) -> list[bytes]:
    """One whole multipart message, without blocking (raises ``zmq.Again`` if none).

    Faster than ``recv_multipart``: a zero-copy frame tells whether more parts
    follow, instead of one ``getsockopt(RCVMORE)`` per part (measured here: about
    500 ns per part against 850-1,200).
    """
    recv = sock.recv
    frame = recv(_NOBLOCK, copy=False)
    parts = [frame.bytes]
    while frame.more:
        frame = recv(_NOBLOCK, copy=False)
        parts.append(frame.bytes)
    return parts


USER_ID = "User-Id"  # the frame property holding the key a CURVE peer proved
_monitors = itertools.count(1)


def monitor(sock: zmq.Socket[Any], events: int) -> zmq.Socket[Any]:
    """A PAIR socket receiving ``sock``'s monitor events. Each gets an inproc address of
    its own: pyzmq's default names it after the socket's descriptor, which a socket made
    later may reuse while the old monitor's endpoint is still being torn down."""
    return sock.get_monitor_socket(events, f"inproc://zq-monitor-{os.getpid()}-{next(_monitors)}")


def user_of(frame: zmq.Frame) -> str | None:
    """The key the connection of a received frame proved (its ZAP user id), or None."""
    try:
        return cast(str, frame.get(USER_ID))
    except zmq.ZMQError:
        return None


def recv_frames(sock: zmq.Socket[Any]) -> tuple[zmq.Frame, list[bytes]]:
    """Like :func:`recv_parts`, and the first part's frame too (its properties say which
    connection it came on and the key that connection proved)."""
    recv = sock.recv
    first = frame = recv(_NOBLOCK, copy=False)
    parts = [frame.bytes]
    while frame.more:
        frame = recv(_NOBLOCK, copy=False)
        parts.append(frame.bytes)
    return first, parts


def send_parts(sock: zmq.Socket[Any], parts: list[bytes], flags: int = 0) -> None:
    """Send a multipart message part by part with plain-int flags (cheaper than
    ``send_multipart``, which builds an enum flag per part). Only the first part
    can raise ``zmq.Again`` or ``EHOSTUNREACH``: once it is queued, so is the rest."""
    send = sock.send
    more = flags | _MORE
    last = len(parts) - 1
    for i, p in enumerate(parts):
        send(p, more if i < last else flags)


class Alarm:
    """Calls ``ring`` at the earliest deadline asked for (a monotonic time): the broker
    sets the event its loop sleeps on, the router runs its timers."""

    def __init__(self, ring: Callable[[], None]) -> None:
        self._ring_cb = ring
        self._handle: asyncio.TimerHandle | None = None
        self._at = float("inf")

    def arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        """Wake at ``when`` unless an earlier wake-up is already set."""
        if self._handle is not None and when >= self._at:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._at = when
        # The loop's timers may fire up to a clock step early; the margin makes the
        # pass that runs find its deadline due instead of spinning until it is.
        self._handle = loop.call_later(max(0.0, when - time.monotonic()) + 0.001, self._ring)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._at = float("inf")

    def _ring(self) -> None:
        self._handle = None
        self._at = float("inf")
        self._ring_cb()
