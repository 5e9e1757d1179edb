"""The client side of a zq session: the asyncio shell around one DEALER socket.

The decisions live in modules without I/O: states and liveness in
:mod:`zq.client.session`, coalescing in :mod:`zq.client.outbox`, replies in
:mod:`zq.client.requests`, routing of what arrives in :mod:`zq.client.dispatch`.
This shell owns the socket, the timers and the futures, feeds those modules
what happens and carries out what they return. No background tasks: the
socket's descriptor and two timers (flush at the end of the loop turn,
heartbeat) drive everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import zmq

from zq.client import session as s
from zq.client.context import HandshakeWatch, dealer, shared_context
from zq.client.dispatch import Dispatch
from zq.client.outbox import Outbox, Sent, Seqs
from zq.client.redial import REDIAL_FIRST, Redial
from zq.client.requests import Requests
from zq.errors import ClientClosed, ConnectionLost, ZqError
from zq.protocol import codec
from zq.protocol import frames as f
from zq.security.curve import ClientKeys
from zq.transport import fd, readable, recv_parts, send_parts

if TYPE_CHECKING:
    from zq.client.consumer import Consumer

__all__ = ["Connection", "shared_context"]

log = logging.getLogger("zq.client")


class Owner(Protocol):
    """The client that owns a connection among others (see :mod:`zq.client.nodes`)."""

    def publish_moved(self, conn: Connection, sent: Sent, exc: ZqError) -> bool:
        """A PUBLISH answered MOVED: whether the owner sends it elsewhere."""
        ...

    def lost(self, conn: Connection, exc: ZqError) -> None:
        """``conn`` gave its node up; called before what waits on it fails, so the
        owner may take its unanswered publishes first (:meth:`Connection.hand_over`)."""
        ...

_READY, _CLOSED = s.State.READY, s.State.CLOSED  # a member looked up on its Enum is slow


_NOBLOCK = int(zmq.NOBLOCK)


class Connection(Redial):
    """Session, flow of frames, confirms, heartbeats. Used by Client and Consumer."""

    def __init__(self, endpoint: str, *, name: str, publish_window: int,
                 connect_timeout: float, producer: bytes = b"", seqs: Seqs | None = None,
                 owner: Owner | None = None, keys: ClientKeys | None = None) -> None:
        self.endpoint = endpoint
        self.keys = keys
        self.name = name
        self.publish_window = publish_window
        self.connect_timeout = connect_timeout
        self.errors: deque[ZqError] = deque(maxlen=100)  # async errors (acks, credit)
        self.consumers: dict[str, Consumer] = {}
        self.session = asyncio.Event()  # set while the broker knows our session
        # What the session says, copied after each of its transitions (in _apply):
        # the hot paths read these per message, and a property costs 40-110 ns more.
        self.welcome: f.Welcome | None = None  # the broker's terms, latest session
        self.broken: ZqError | None = None  # why the broker was given up
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._sock: zmq.Socket[bytes] | None = None
        self._sess = s.Session(name, endpoint, producer)
        self._outbox = Outbox(seqs)  # seqs: the client's, shared by all its connections
        self._requests = Requests()
        self._dispatch = Dispatch(self._sess, self._outbox, self._requests, self.consumers,
                                  self.errors)
        self.owner = owner  # the client's connections: failover and MOVED
        self._dispatch.moved = self._moved
        self._dispatch.hello_refused = self._hello_refused
        self._flush_scheduled = False
        self._welcome_fut: asyncio.Future[None] | None = None
        self._window_waiters: deque[asyncio.Future[None]] = deque()
        self._hb: asyncio.TimerHandle | None = None
        # Refusals of the handshake: while opening, and all along with CURVE (a key can
        # be refused later, when it was revoked).
        self._watch: HandshakeWatch | None = None
        self._redial_in = REDIAL_FIRST  # after a refused key: seconds until a new try

    @property
    def limits(self) -> codec.Limits:  # what we decode, and how publishes are split
        return self._outbox.limits

    @limits.setter
    def limits(self, value: codec.Limits) -> None:
        self._outbox.limits = value

    @property
    def resent(self) -> int:
        """PUBLISH frames sent again, with their seqs, in a session that replaced a lost one."""
        return self._outbox.resent

    @property
    def unconfirmed(self) -> int:  # messages published and not yet confirmed or refused
        return self._outbox.unconfirmed

    # ------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        try:
            sock = self._sock = dealer(self.endpoint, self.keys)
        except zmq.ZMQError as exc:
            raise ConnectionLost(f"cannot connect to {self.endpoint}: {exc}",
                                 endpoint=self.endpoint) from None
        self._watch = HandshakeWatch(sock, self._loop, self._refused)
        self._loop.add_reader(fd(sock), self._on_readable)
        try:
            await self._handshake()
        except BaseException:
            self._teardown()
            raise
        if self.keys is None and self._watch is not None:
            # Without CURVE nothing can refuse us later: no monitor socket (two sockets
            # of the shared context) for the connection's whole life.
            self._watch.close()
            self._watch = None
        self._hb = self._loop.call_later(self._sess.interval, self._on_heartbeat)

    async def _handshake(self) -> None:
        self._welcome_fut = fut = self._loop.create_future()
        self._apply(self._sess.open(self._loop.time()))
        try:
            await asyncio.wait_for(asyncio.shield(fut), self.connect_timeout)
        except TimeoutError:
            raise ConnectionLost(
                f"no zq broker answered at {self.endpoint} within {self.connect_timeout:g}s",
                endpoint=self.endpoint) from None

    async def close(self) -> None:
        """Say BYE (the broker requeues whatever we still hold), then close the socket."""
        if self.closed:
            return
        self._apply(self._sess.close(self._loop.time()))
        self._teardown(linger_ms=1000)

    def _teardown(self, linger_ms: int = 0) -> None:
        if self._hb is not None:
            self._hb.cancel()
            self._hb = None
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        if self._sock is not None:
            with contextlib.suppress(zmq.ZMQError, ValueError):
                self._loop.remove_reader(fd(self._sock))
            # The shared context sends what is queued (a BYE) in the background,
            # for up to ``linger_ms``, and at the latest when the process exits.
            self._sock.close(linger=linger_ms)
            self._sock = None

    def check(self) -> None:
        if self.closed:
            raise ClientClosed("client is closed")

    # ------------------------------------------------------------ publishing

    def publish(self, queue: str, body: bytes, headers: f.Headers | None) -> asyncio.Future[Any]:
        fut = self._loop.create_future()
        self._outbox.publish(queue, body, headers, fut)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return fut

    def publish_opts(self, queue: str, body: bytes, headers: f.Headers | None,
                     opts: f.Options) -> asyncio.Future[Any]:
        """Like :meth:`publish`, coalesced only with publishes of the same options
        (a message with a ``dedup_id`` travels alone in its frame)."""
        fut = self._loop.create_future()
        self._outbox.publish_opts(queue, body, headers, opts, fut)
        self._schedule_flush()
        return fut

    def publish_frame(self, queue: str, bodies: list[bytes],
                      headers: list[f.Headers | None],
                      opts: f.Options | None = None) -> asyncio.Future[Any]:
        """One PUBLISH frame for ``bodies``; the future gets the list of ids."""
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._outbox.publish_frame(queue, bodies, headers, fut, opts)
        self._schedule_flush()
        return fut

    def hand_over(self) -> list[Sent]:
        """The PUBLISH frames without an answer, for another connection to send
        (:meth:`adopt`); this one forgets them. Used when its node is lost."""
        out = self._outbox.hand_over()
        self._release_window()
        return out

    def adopt(self, sents: list[Sent], *, resent: bool) -> None:
        """Send PUBLISH frames another connection has no answer for, with their seqs."""
        self._outbox.adopt(sents, resent)
        self._schedule_flush()

    async def wait_window(self, n: int) -> None:
        """Wait until ``n`` more unconfirmed messages fit the publish window."""
        while self.unconfirmed and self.unconfirmed + n > self.publish_window:
            if self.broken is not None:
                raise self.broken
            self.check()
            fut = self._loop.create_future()
            self._window_waiters.append(fut)
            await fut

    def _release_window(self) -> None:
        while self._window_waiters and (self.unconfirmed < self.publish_window
                                        or self.broken is not None or self.closed):
            w = self._window_waiters.popleft()
            if not w.done():
                w.set_result(None)

    # ------------------------------------------------------------ consuming

    def credit(self, queue: str, n: int) -> None:
        self._outbox.grant(queue, n)
        self._schedule_flush()

    def cancel(self, queue: str) -> None:
        self._outbox.cancel(queue)
        self._schedule_flush()

    def note_starting(self, consumer: Consumer) -> None:
        """``consumer`` has messages its application took: at the end of this turn a
        START names those not settled by then (see :meth:`Consumer.taken_unsettled`)."""
        self._outbox.note_starting(consumer)
        self._schedule_flush()

    def owe(self, consumer: Consumer) -> None:
        """``consumer`` settled a message: its credit joins the frames at the end of
        the turn, after the settlements (see :meth:`Consumer.take_owed`)."""
        self._outbox.owe(consumer)
        self._schedule_flush()

    def detach(self, consumer: Consumer) -> None:
        """``consumer`` goes to another connection: CANCEL here (after what it queued)."""
        if self.consumers.get(consumer.queue) is consumer:
            del self.consumers[consumer.queue]
            if not self.closed and self.broken is None:
                self.cancel(consumer.queue)
        self._outbox.forget(consumer)

    def start(self, mid: int, attempt: int) -> None:
        """START for one delivery now (a consumer that moved took it from here)."""
        if self._outbox.starts:
            self._direct(codec.encode(f.Start([mid], [attempt])))

    def ack(self, mid: int, attempt: int) -> None:
        self._outbox.ack(mid, attempt)
        self._schedule_flush()

    def nack(self, mid: int, attempt: int, requeue: bool, delay_ms: int, reason: str) -> None:
        self._outbox.nack(mid, attempt, requeue, delay_ms, reason)
        self._schedule_flush()

    def release(self, ids: list[int]) -> None:
        self._outbox.release(ids)
        self._schedule_flush()

    def extend(self, mid: int, attempt: int, ms: int) -> None:
        self._direct(codec.encode(f.Extend([mid], [attempt], ms)))

    # ------------------------------------------------------------ requests

    async def stats(self) -> dict[str, Any]:
        return await self.request(None, {})

    async def manage(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """Send MANAGE ``op``; return the reply's result or raise the broker's error.

        Raises ConnectionLost if the broker goes away before it answers, and
        SessionUnknown if the broker dropped the session before it answered an
        operation that changes something (whether it took effect is unknown).
        """
        return await self.request(op, args)

    async def locate(self, queue: str) -> dict[str, Any]:
        """LOCATE ``queue``: the LOCATION map (send only to a node in a cluster)."""
        return await self.request(None, {"queue": queue}, f.LOCATE)

    def request(self, op: str | None, args: dict[str, Any],
                kind: int | None = None) -> asyncio.Future[dict[str, Any]]:
        """Send STATS (``op`` None), MANAGE ``op`` or LOCATE (``kind``) now; the future
        gets the reply."""
        self.check()
        if self.broken is not None:
            raise self.broken
        fut: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        req = self._outbox.next_seq()
        self._direct(self._requests.add(req, op, args, fut, self._sess.epoch, kind))
        return fut

    async def settled(self, mid: int) -> None:
        """Wait for the broker's verdict on the settlement of ``mid`` queued just before.

        A ``sync`` MANAGE follows it; its reply comes after every error for frames
        sent before. Raises the broker's STALE_DELIVERY or UNKNOWN_DELIVERY for
        ``mid``, or ConnectionLost if the broker goes away (it may then have taken
        the settlement or not). If the broker was thought lost, the settlement goes
        out anyway: a broker still there answers it (STALE_DELIVERY) and a new
        session opens, on which the sync goes; that wait is bounded by the
        broker's liveness.
        """
        w = self._requests.wait(mid)
        try:
            if self.broken is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._sess.patience_beat):
                        await self.session.wait()
                self.check()
                if w.error is None and self.broken is not None:
                    raise self.broken
            if w.error is None:
                try:
                    await self.request("sync", {})
                except ZqError:
                    if w.error is None:
                        raise
        finally:
            self._requests.unwait(mid, w)
        if w.error is not None:
            raise w.error

    # ------------------------------------------------------------ sending

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _direct(self, parts: list[bytes]) -> None:
        """Queue a control frame after everything requested before it (order is causal)."""
        self._outbox.control(parts)
        self._schedule_flush()

    def flush(self) -> None:
        """Send everything coalesced so far now, without waiting for the turn to end."""
        if not self.closed and self.broken is None:
            self._flush()

    def _flush(self) -> None:
        self._flush_scheduled = False
        sock = self._sock
        if sock is None:
            return
        out = self._outbox.take()
        if out:
            try:
                for parts in out:
                    send_parts(sock, parts, _NOBLOCK)
            except zmq.Again:
                # No connection to queue on: libzmq gave it up after the server refused
                # our key (it keeps one, and queues, while it only reconnects). What
                # matters is sent again once a session is back (unconfirmed publishes,
                # HELLO); deliveries not acked are redelivered.
                log.debug("%s: %d frame(s) dropped: no connection", self.endpoint, len(out))
            self._sess.sent(self._loop.time())
        # Sending can swallow the descriptor's edge: look for input we would miss.
        if readable(sock):
            self._loop.call_soon(self._on_readable)

    # ------------------------------------------------------------ receiving

    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        got = False
        while True:
            try:
                parts = recv_parts(sock)
            except zmq.Again:
                break
            except zmq.ZMQError:
                return
            got = True
            try:
                frame = codec.decode(parts, self.limits)
            except ZqError as exc:
                self._dispatch.undecodable(parts, exc)
                continue
            self._apply(self._dispatch.frame(frame, self._loop.time()))
        if got:
            # A broker we gave up that still talks to us kept our session, which we
            # have already failed: the session ends it and opens a new one.
            self._apply(self._sess.received(self._loop.time()))
            if self._window_waiters:
                self._release_window()  # confirms and refusals made room
        if self._outbox.urgent:
            self._flush()
        elif not self._outbox.empty:
            self._schedule_flush()  # releases and nacks the frames called for

    # ------------------------------------------------------------ liveness

    def _on_heartbeat(self) -> None:
        if self._sock is None or self.welcome is None:
            return
        if readable(self._sock):
            # Read what waits first: after this process was stalled (SIGSTOP, a long
            # GC, a blocked loop) the timer runs before queued frames are read, and
            # the silence would be ours, not the broker's.
            self._on_readable()
            if self._sock is None:
                return
        self._apply(self._sess.tick(self._loop.time()))
        self._hb = self._loop.call_later(self._sess.interval, self._on_heartbeat)

    def _lost(self, exc: ZqError) -> None:
        """Give the broker up: fail what waits on it; stay ready to resume."""
        self._apply(self._sess.give_up(exc, self._loop.time()))

    # ------------------------------------------------------------ session actions

    def _hello_refused(self, exc: ZqError) -> bool:
        """Our HELLO was refused while open() waits for WELCOME (a standby): open()
        fails now with ConnectionLost, instead of when its timeout runs out."""
        fut = self._welcome_fut
        if fut is None or fut.done() or self.welcome is not None:
            return False
        log.info("%s refused the session: %s", self.endpoint, exc)
        info = exc.attrs.get("info")
        primary = info.get("endpoint") if isinstance(info, dict) else None
        fut.set_exception(ConnectionLost(f"{self.endpoint} refused the session: {exc}",
                                         endpoint=self.endpoint,
                                         primary=primary if isinstance(primary, str) else None))
        return True

    def _moved(self, sent: Sent, exc: ZqError) -> bool:
        """A PUBLISH answered MOVED: whether the owner sends it elsewhere."""
        return self.owner is not None and self.owner.publish_moved(self, sent, exc)

    def _fail(self, error: ZqError, lost: bool) -> None:
        """Fail what waits: the node is ``lost`` (its owner may take the unanswered
        publishes to another first), or the client closed."""
        if lost:
            log.warning("%s", error)
            if self.owner is not None:
                self.owner.lost(self, error)
        self._dispatch.fail(error)
        self._release_window()

    def _apply(self, actions: Sequence[s.Action]) -> None:
        """Carry out what the session decided, in order."""
        for action in actions:
            match action:
                case s.Send(frame):
                    self._outbox.control(codec.encode(frame))
                    self._flush()  # now, after everything requested before
                case s.Fail(error, lost):
                    self._fail(error, lost)
                case s.Void(epoch, error):
                    self._requests.void(epoch, error)
                case s.Opened(welcome):
                    self._redial_in = REDIAL_FIRST
                    self._outbox.welcome(welcome)
                    if self._welcome_fut is not None and not self._welcome_fut.done():
                        self._welcome_fut.set_result(None)  # open() returns
                case s.Restore(epoch):
                    self._dispatch.restore(epoch)
                    self._flush()
                case s.Warn(text):
                    log.warning("%s", text)
        sess = self._sess
        self.welcome, self.broken, self.closed = sess.welcome, sess.broken, sess.state is _CLOSED
        if sess.state is _READY:
            self.session.set()
        elif not self.closed:
            self.session.clear()
