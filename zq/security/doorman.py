"""The connections of a server socket: who never said HELLO, who must be cut off, and
why handshakes failed. The I/O side of a broker's or a router's bounds on peers.

ZeroMQ hides connections behind a ROUTER socket; its monitor tells when one is
accepted or closed (with its file descriptor), and each received frame carries the
descriptor it came from (``ZMQ_SRCFD``). So the doorman can:

* close a connection that has no session ``hello_timeout`` seconds after it was
  accepted (a peer that completes the handshake and never speaks would otherwise keep
  a descriptor forever);
* close the connection of a peer the server gives up on (too many malformed frames, a
  revoked key), by shutting its socket down: libzmq then sees it end and closes it;
* count and log failed handshakes by reason (no key, a wrong server key, garbage).

A descriptor is shut down only if the monitor says it is open and it is still
connected to the peer address seen when it was accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import zmq

from zq.logs import Throttle
from zq.transport import fd as socket_fd
from zq.transport import monitor

log = logging.getLogger("zq.security")

EVENTS = (zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED
          | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
          | zmq.EVENT_HANDSHAKE_FAILED_AUTH)

_PROTOCOL_REASONS = {
    int(zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH): "no key (another security mechanism)",
    int(zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC): "wrong server key or bad encryption",
    int(zmq.PROTOCOL_ERROR_ZMTP_KEY_EXCHANGE): "bad key exchange",
}
_LOG_PER_SECOND = 20  # handshake failures logged one by one; more are summed up


class RateLog:
    """Warnings about refused peers: each logged with its reason, up to a number per
    second; beyond it, counted and summed up in one line a second (an attacker must
    not be able to flood the log). A :class:`zq.logs.Throttle` with these words."""

    def __init__(self, name: str, per_second: int = _LOG_PER_SECOND,
                 pending: Callable[[], None] | None = None) -> None:
        self.name = name
        self.throttle = Throttle(log, "connection_refused",
                                 name.replace("%", "%%") + ": refused %d more connection(s): %s",
                                 per_second=per_second, pending=pending)

    @property
    def pending(self) -> Callable[[], None] | None:
        """Called when it starts holding lines back (flush within 1 s)."""
        return self.throttle.pending

    @pending.setter
    def pending(self, fn: Callable[[], None] | None) -> None:
        self.throttle.pending = fn

    def say(self, reason: str, detail: str = "", **fields: Any) -> None:
        """One refusal; ``fields`` (the key, the address) go into a JSON log line."""
        self.throttle.say("%s: refused a connection: %s%s", self.name, reason,
                          f" ({detail})" if detail else "", reason=reason, server=self.name,
                          **fields)

    def flush(self) -> None:
        """Sum up what was not logged (called at least once a second while refusing)."""
        self.throttle.flush()


def handshake_reason(event: int, value: int) -> str:
    """Why a handshake failed, in words, from a monitor event and its value."""
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return f"key refused (ZAP status {value})"
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        return _PROTOCOL_REASONS.get(value, "not a ZMTP 3 peer of this mechanism (garbage)")
    return "connection ended during the handshake"


class Doorman:
    """Watches one server socket's connections (see the module docstring)."""

    def __init__(self, sock: zmq.Socket[Any], *, hello_timeout: float, name: str) -> None:
        self.hello_timeout = hello_timeout
        self.name = name
        self._sock = sock
        self._mon = monitor(sock, EVENTS)
        self.open: dict[int, tuple[float, Any]] = {}  # fd -> (accepted at, peer address)
        self.waiting: dict[int, float] = {}  # fd -> deadline: open, no session yet
        self.failed: Counter[str] = Counter()  # handshake failures by reason
        self.dropped: Counter[str] = Counter()  # connections this doorman closed, by reason
        self.log = RateLog(name, pending=lambda: self._arm(1.0))
        # Connections it closes: one warning each, a flood (silent peers) summed up.
        self.cuts = Throttle(log, "connection_cut",
                             name.replace("%", "%%") + ": closed %d more connection(s): %s",
                             pending=lambda: self._arm(1.0))
        self.others: list[RateLog] = []  # flushed with ours (the authenticator's)
        self._unexplained = 0  # handshake failures not yet matched with their close
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(socket_fd(self._mon), self.poll)
        self.poll()

    def close(self) -> None:
        self.log.flush()  # the last second's refusals and cuts are said too
        self.cuts.flush()
        for other in self.others:
            other.flush()
        if self._timer is not None:
            self._timer.cancel()
        if self._loop is not None:
            self._loop.remove_reader(socket_fd(self._mon))
            self._loop = None
        # Stop the events first: libzmq sends them from its I/O thread, which would
        # block (and every socket of the context with it) on a monitor nobody reads.
        with contextlib.suppress(zmq.ZMQError):
            self._sock.disable_monitor()
        self._mon.close(linger=0)

    # ------------------------------------------------------------------ events

    def poll(self) -> None:
        """Read every monitor event queued now."""
        mon = self._mon
        while True:
            try:
                head, _endpoint = mon.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            event, value = struct.unpack("=HI", head[:6])
            self._event(event, value)

    def _event(self, event: int, value: int) -> None:
        if event == zmq.EVENT_ACCEPTED:
            now = time.monotonic()
            self.open[value] = (now, _peer(value))
            self.waiting[value] = now + self.hello_timeout
            self._arm(self.hello_timeout)
        elif event in (zmq.EVENT_DISCONNECTED, zmq.EVENT_CLOSED):
            self.open.pop(value, None)
            if self.waiting.pop(value, None) is not None:
                self._closed_early()
        else:
            reason = handshake_reason(event, value)
            self.failed[reason] += 1
            self._unexplained += 1
            if event != zmq.EVENT_HANDSHAKE_FAILED_AUTH:  # the authenticator logs those
                self.log.say(reason)

    def _closed_early(self) -> None:
        """A connection without a session closed (not by us). If a failed handshake
        explains it, it was counted then; else it never completed one, or it left
        before its HELLO: random bytes get no other event from libzmq."""
        if self._unexplained > 0:
            self._unexplained -= 1
            return
        reason = "closed before a session (not ZMTP 3 or it left)"
        self.failed[reason] += 1
        self.log.say(reason)

    # ------------------------------------------------------------ frames, cuts

    def spoke(self, frame: zmq.Frame) -> None:
        """The connection ``frame`` came on has a session now. (Its ACCEPTED event was
        queued before any of its messages: read it first, or it would set a deadline
        for a connection that has already spoken.)"""
        self.poll()
        self.waiting.pop(srcfd(frame), None)

    def cut_frame(self, frame: zmq.Frame, why: str) -> None:
        """Close the connection ``frame`` came on."""
        self.cut(srcfd(frame), why)

    def cut(self, fd: int, why: str) -> bool:
        """Shut connection ``fd`` down if it is still the one accepted; True if done."""
        self.poll()  # so that a descriptor closed and reused is known as such
        self.waiting.pop(fd, None)
        entry = self.open.get(fd)
        if entry is None or entry[1] is None or _peer(fd) != entry[1]:
            return False
        with contextlib.suppress(OSError):
            sock = socket.socket(fileno=os.dup(fd))
            try:
                sock.shutdown(socket.SHUT_RDWR)
            finally:
                sock.close()
            self.dropped[why] += 1
            self.cuts.say("%s: closed connection %s: %s", self.name, entry[1], why,
                          reason=why, server=self.name, address=_address(entry[1]))
            return True
        return False

    def sweep(self) -> None:
        """Close the connections that are past their hello timeout (and sum up the
        refusals not logged one by one)."""
        self._timer = None
        self.log.flush()
        self.cuts.flush()
        for other in self.others:
            other.flush()
        now = time.monotonic()
        late = [fd for fd, deadline in self.waiting.items() if deadline <= now]
        for fd in late:
            self.cut(fd, f"no HELLO within {self.hello_timeout:g} s")
        if self.waiting:
            self._arm(max(0.0, min(self.waiting.values()) - now))

    def _arm(self, delay: float) -> None:
        if self._loop is None:
            return
        when = self._loop.time() + delay + 0.01
        if self._timer is not None:
            if self._timer.when() <= when:
                return
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self.sweep)

    def stats(self) -> dict[str, Any]:
        return {"connections": len(self.open), "without_session": len(self.waiting),
                "handshakes_failed": dict(self.failed), "closed": dict(self.dropped)}


def srcfd(frame: zmq.Frame) -> int:
    """The descriptor of the connection a received frame came on (-1: none, inproc)."""
    try:
        return int(frame.get(zmq.SRCFD))
    except zmq.ZMQError:
        return -1


def _address(peer: Any) -> str:
    """("10.0.0.5", 40022) -> "10.0.0.5:40022" (a JSON log field)."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


def _peer(fd: int) -> Any:
    """The peer address of socket ``fd`` (None if it has none or is not a socket)."""
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return None
    try:
        return sock.getpeername()
    except OSError:
        return None
    finally:
        sock.close()
