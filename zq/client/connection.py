"""The client side of a zq session: one DEALER socket driven by loop callbacks.

No background tasks: the socket's file descriptor and two timers (flush at the
end of the loop turn, heartbeat) drive everything. Work requested during one
loop turn (publishes, acks, credit) is coalesced and sent as few frames as
possible when the turn ends.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
from collections import deque
from typing import TYPE_CHECKING, Any

import zmq

from zq.errors import ClientClosed, ConnectionLost, SessionUnknown, ZqError, error_from_code
from zq.protocol import codec
from zq.protocol import frames as f
from zq.transport import fd, readable, recv_parts, send_parts

if TYPE_CHECKING:
    from zq.client.consumer import Consumer

log = logging.getLogger("zq.client")

# MALFORMED_FRAME, UNSUPPORTED_VERSION, UNKNOWN_OPCODE, PROTOCOL_VIOLATION end a session
_FATAL_CODES = {2, 3, 4, 5}


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


# MANAGE operations sent again on a new session when the old one refused them with
# SESSION_UNKNOWN (reading or idempotent); the others fail with SESSION_UNKNOWN.
_RESENDABLE = frozenset({"sync", "info", "list", "peek", "declare", "pause", "resume",
                         "schedule_ls", "schedule_add", "status", "wait"})


def options_size(opts: f.Options) -> int:
    """Bytes a PUBLISH header spends on ``opts`` (besides what codec's sizing counts)."""
    return len(codec.packb(opts.to_map())) + 1


def limits_with(limits: codec.Limits, extra: int) -> codec.Limits:
    """``limits`` with ``extra`` header bytes (publish options) taken off the frame."""
    if not extra:
        return limits
    return codec.Limits(max_frame=max(1024, limits.max_frame - extra),
                        max_header=max(256, limits.max_header - extra),
                        max_batch=limits.max_batch)


class _Sent:
    """A PUBLISH frame waiting for its CONFIRM (kept for resending after a broker restart)."""

    __slots__ = ("bodies", "futs", "headers", "many", "opts", "queue")

    def __init__(self, queue: str, bodies: list[bytes], headers: list[f.Headers | None],
                 futs: list[asyncio.Future[Any]], many: bool,
                 opts: f.Options | None = None) -> None:
        self.queue = queue
        self.bodies = bodies
        self.headers = headers
        self.futs = futs  # one per body, or one for the whole frame when ``many``
        self.many = many
        self.opts = opts

    def header(self, seq: int) -> bytes:
        opts = self.opts
        head: bytes = codec.packb([seq, self.headers] if opts is None
                                  else [seq, self.headers, opts.to_map()])
        return head


class _Batch:
    """Publishes to one queue (with the same options) requested during this loop turn."""

    __slots__ = ("bodies", "futs", "has_headers", "headers", "opts", "queue")

    def __init__(self, queue: str, opts: f.Options | None = None) -> None:
        self.queue = queue
        self.opts = opts
        self.bodies: list[bytes] = []
        self.headers: list[f.Headers | None] = []
        self.futs: list[asyncio.Future[Any]] = []
        self.has_headers = False


class _Request:
    """A STATS (``op`` None) or MANAGE request waiting for its reply."""

    __slots__ = ("args", "epoch", "fut", "op", "resend")

    def __init__(self, op: str | None, args: dict[str, Any],
                 fut: asyncio.Future[dict[str, Any]], epoch: int) -> None:
        self.op = op
        self.args = args
        self.fut = fut
        self.epoch = epoch  # the HELLO it was sent after
        self.resend = False  # refused with SESSION_UNKNOWN: send again on the new session

    def encode(self, req: int) -> list[bytes]:
        if self.op is None:
            return codec.encode(f.Stats(req))
        return codec.encode(f.Manage(req, self.op, self.args))


class _Wait:
    """A settlement whose caller waits for the broker's verdict (``ack(wait=True)``)."""

    __slots__ = ("error",)

    def __init__(self) -> None:
        self.error: ZqError | None = None


class Connection:
    """Session, flow of frames, confirms, heartbeats. Used by Client and Consumer."""

    def __init__(self, endpoint: str, *, name: str, publish_window: int,
                 connect_timeout: float) -> None:
        self.endpoint = endpoint
        self.name = name
        self.publish_window = publish_window
        self.connect_timeout = connect_timeout
        self.welcome: f.Welcome | None = None
        self.closed = False
        self.broken: ZqError | None = None  # set when the broker went away
        self.limits = codec.DEFAULT_LIMITS
        self.unconfirmed = 0
        self.errors: deque[ZqError] = deque(maxlen=100)  # async errors (acks, credit)
        self.consumers: dict[str, Consumer] = {}
        self._loop = asyncio.get_running_loop()
        self._sock: zmq.Socket[bytes] | None = None
        self._out: list[list[bytes]] = []
        # Keyed by queue name for publishes without options (the hot path), by
        # (queue, options) with options, and by (queue, options, n) with a dedup_id.
        self._batches: dict[Any, _Batch] = {}
        self._solo = 0
        self._acks: tuple[list[int], list[int]] = ([], [])
        self._nacks: dict[tuple[bool, int, str], tuple[list[int], list[int]]] = {}
        self._releases: list[int] = []
        self.starting: list[Consumer] = []  # consumers whose application took messages
        self._credit: dict[str, int] = {}
        self.owing: list[Consumer] = []  # consumers with credit earned by settling
        self._flush_scheduled = False
        self._seq = 0
        self._sent: dict[int, _Sent] = {}
        self._requests: dict[int, _Request] = {}  # STATS and MANAGE awaiting a reply
        self._waits: dict[int, list[_Wait]] = {}  # message id -> settlements waited on
        self._epoch = 0  # HELLOs sent so far
        self._welcome_fut: asyncio.Future[f.Welcome] | None = None
        self._window_waiters: deque[asyncio.Future[None]] = deque()
        self._last_recv = 0.0
        self._last_send = 0.0
        self._hb: asyncio.TimerHandle | None = None
        self._resuming = False
        self._resume_at = 0.0  # when the HELLO of a resume went out
        self._said_bye = False  # the broker said BYE: it is going away, not coming back now
        self.session = asyncio.Event()  # set while the broker knows our session

    # ------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        sock = shared_context().socket(zmq.DEALER)
        self._sock = sock
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)  # the publish window and credit bound what we queue
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.ROUTING_ID, b"zq-" + os.urandom(8))
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        try:
            sock.connect(self.endpoint)
        except zmq.ZMQError as exc:
            self._teardown()
            raise ConnectionLost(f"cannot connect to {self.endpoint}: {exc}",
                                 endpoint=self.endpoint) from None
        self._loop.add_reader(fd(sock), self._on_readable)
        try:
            await self._handshake()
        except BaseException:
            self._teardown()
            raise
        self._arm_heartbeat()

    async def _handshake(self) -> None:
        self._welcome_fut = self._loop.create_future()
        self._epoch += 1
        self._send_now(codec.encode(f.Hello(self.name, starts=True)))
        try:
            welcome = await asyncio.wait_for(asyncio.shield(self._welcome_fut),
                                             self.connect_timeout)
        except TimeoutError:
            raise ConnectionLost(
                f"no zq broker answered at {self.endpoint} within {self.connect_timeout:g}s",
                endpoint=self.endpoint) from None
        self._on_welcome(welcome)

    def _on_welcome(self, w: f.Welcome) -> None:
        self.welcome = w
        self.limits = codec.Limits(max_frame=w.max_frame,
                                   max_batch=max(w.max_batch, w.max_credit, 10_000))
        self.broken = None
        self.session.set()

    async def close(self) -> None:
        """Say BYE (the broker requeues whatever we still hold), then close the socket."""
        if self.closed:
            return
        self.closed = True
        err = ClientClosed("client closed")
        self._fail_pending(err)
        for consumer in list(self.consumers.values()):
            consumer._fail(err)
        if self._sock is not None and self.broken is None:
            self._flush()
            self._send_now(codec.encode(f.Bye("client closed")))
        self._teardown(linger_ms=1000)

    def _teardown(self, linger_ms: int = 0) -> None:
        if self._hb is not None:
            self._hb.cancel()
            self._hb = None
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
        batch = self._batches.get(queue)
        if batch is None:
            batch = self._batches[queue] = _Batch(queue)
        return self._enqueue(batch, body, headers)

    def _enqueue(self, batch: _Batch, body: bytes, headers: f.Headers | None
                 ) -> asyncio.Future[Any]:
        fut = self._loop.create_future()
        batch.bodies.append(body)
        batch.headers.append(headers)
        batch.futs.append(fut)
        if headers is not None:
            batch.has_headers = True
        self.unconfirmed += 1
        self._schedule_flush()
        return fut

    def publish_opts(self, queue: str, body: bytes, headers: f.Headers | None,
                     opts: f.Options) -> asyncio.Future[Any]:
        """Like :meth:`publish`, coalesced only with publishes of the same options.

        A message with a ``dedup_id`` travels alone in its frame.
        """
        key: tuple[Any, ...]
        if opts.dedup_id is not None:
            self._solo += 1
            key = (queue, opts, self._solo)
        else:
            key = (queue, opts)
        batch = self._batches.get(key)
        if batch is None:
            batch = self._batches[key] = _Batch(queue, opts)
        return self._enqueue(batch, body, headers)

    def publish_frame(self, queue: str, bodies: list[bytes],
                      headers: list[f.Headers | None],
                      opts: f.Options | None = None) -> asyncio.Future[Any]:
        """One PUBLISH frame for ``bodies``; the future gets the list of ids."""
        fut: asyncio.Future[Any] = self._loop.create_future()
        self.unconfirmed += len(bodies)
        self._emit_publish(queue, bodies, headers, [fut], many=True, opts=opts)
        self._schedule_flush()
        return fut

    async def wait_window(self, n: int) -> None:
        """Wait until ``n`` more unconfirmed messages fit the publish window."""
        while self.unconfirmed and self.unconfirmed + n > self.publish_window:
            if self.broken is not None:
                raise self.broken
            self.check()
            fut = self._loop.create_future()
            self._window_waiters.append(fut)
            await fut

    def _emit_publish(self, queue: str, bodies: list[bytes], headers: list[f.Headers | None],
                      futs: list[asyncio.Future[Any]], many: bool,
                      opts: f.Options | None = None) -> None:
        self._seq += 1
        seq = self._seq
        sent = self._sent[seq] = _Sent(queue, bodies, headers, futs, many, opts)
        self._out.append([codec.command(f.PUBLISH), queue.encode(),
                          codec.packb([seq, headers]) if opts is None else sent.header(seq),
                          *bodies])

    def _on_confirm(self, frame: f.Confirm) -> None:
        for seq, first, count in frame.entries:
            sent = self._sent.pop(seq, None)
            if sent is None:
                continue  # a confirm for a frame we resent after a broker restart
            self.unconfirmed -= len(sent.bodies)
            if sent.many:
                fut = sent.futs[0]
                if not fut.done():
                    fut.set_result(list(range(first, first + count)))
            else:
                for i, fut in enumerate(sent.futs):
                    if not fut.done():
                        fut.set_result(first + i)
        self._release_window()

    def _release_window(self) -> None:
        while self._window_waiters and (self.unconfirmed < self.publish_window
                                        or self.broken is not None or self.closed):
            w = self._window_waiters.popleft()
            if not w.done():
                w.set_result(None)

    # ------------------------------------------------------------ consuming

    def credit(self, queue: str, n: int) -> None:
        self._credit[queue] = self._credit.get(queue, 0) + n
        self._schedule_flush()

    def cancel(self, queue: str) -> None:
        self._credit.pop(queue, None)
        self._direct(codec.encode(f.Cancel(queue)))

    def note_starting(self, consumer: Consumer) -> None:
        """``consumer`` has messages its application took: at the end of this turn a
        START names those not settled by then (see :meth:`Consumer.taken_unsettled`)."""
        self.starting.append(consumer)
        self._schedule_flush()

    def ack(self, mid: int, attempt: int) -> None:
        self._acks[0].append(mid)
        self._acks[1].append(attempt)
        self._schedule_flush()

    def nack(self, mid: int, attempt: int, requeue: bool, delay_ms: int, reason: str) -> None:
        key = (requeue, delay_ms, reason)
        pair = self._nacks.get(key)
        if pair is None:
            pair = self._nacks[key] = ([], [])
        pair[0].append(mid)
        pair[1].append(attempt)
        self._schedule_flush()

    def release(self, ids: list[int]) -> None:
        self._releases.extend(ids)
        self._schedule_flush()

    def extend(self, mid: int, attempt: int, ms: int) -> None:
        self._direct(codec.encode(f.Extend([mid], [attempt], ms)))

    async def stats(self) -> dict[str, Any]:
        return await self._request(None, {})

    async def manage(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """Send MANAGE ``op``; return the reply's result or raise the broker's error.

        Raises ConnectionLost if the broker goes away before it answers, and
        SessionUnknown if the broker dropped the session before it answered an
        operation that changes something (whether it took effect is unknown).
        """
        return await self._request(op, args)

    def _request(self, op: str | None, args: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        self.check()
        if self.broken is not None:
            raise self.broken
        self._seq += 1
        req = self._seq
        r = self._requests[req] = _Request(op, args, self._loop.create_future(), self._epoch)
        self._direct(r.encode(req))
        return r.fut

    async def settled(self, mid: int) -> None:
        """Wait for the broker's verdict on the settlement of ``mid`` queued just before.

        A ``sync`` MANAGE follows the settlement; its reply comes after every
        error for frames sent before it. Raises the broker's STALE_DELIVERY or
        UNKNOWN_DELIVERY for ``mid``, or ConnectionLost if the broker goes away
        (it may then have taken the settlement or not).

        If the broker was thought lost, the settlement goes out anyway: a broker
        that is still there answers it (STALE_DELIVERY: the session that held the
        delivery is gone) and a new session opens, on which the sync goes. The
        wait for that is bounded by the broker's liveness; then ConnectionLost.
        """
        w = _Wait()
        self._waits.setdefault(mid, []).append(w)
        try:
            if self.broken is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._liveness_s()):
                        await self.session.wait()
                self.check()
                if w.error is None and self.broken is not None:
                    raise self.broken
            if w.error is None:
                try:
                    await self._request("sync", {})
                except ZqError:
                    if w.error is None:
                        raise
        finally:
            waits = self._waits.get(mid)
            if waits is not None:
                with contextlib.suppress(ValueError):
                    waits.remove(w)
                if not waits:
                    del self._waits[mid]
        if w.error is not None:
            raise w.error

    def _liveness_s(self) -> float:
        """How long the broker may stay silent before it counts as gone (plus a beat)."""
        w = self.welcome
        return w.heartbeat_ms / 1000.0 * (w.liveness + 1) if w is not None else 5.0

    # ------------------------------------------------------------ sending

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _direct(self, parts: list[bytes]) -> None:
        """Queue a control frame after everything requested before it (order is causal)."""
        self._materialize()
        self._out.append(parts)
        self._schedule_flush()

    def flush(self) -> None:
        """Send everything coalesced so far now, without waiting for the turn to end."""
        if not self.closed and self.broken is None:
            self._flush()

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._sock is None:
            return
        self._materialize()
        if self._out:
            out, self._out = self._out, []
            sock = self._sock
            for parts in out:
                send_parts(sock, parts)
            self._last_send = self._loop.time()
        # Sending can swallow the descriptor's edge: look for input we would miss.
        if readable(self._sock):
            self._loop.call_soon(self._on_readable)

    def _materialize(self) -> None:
        """Turn this turn's coalesced publishes, settlements and credit into frames."""
        max_batch = self.welcome.max_batch if self.welcome else 1000
        if self._batches:
            batches, self._batches = self._batches, {}
            for b in batches.values():
                queue, opts = b.queue, b.opts
                headers = b.headers if b.has_headers else []
                hsizes = [codec.header_size(h) for h in headers] if headers else None
                limits = self.limits if opts is None else \
                    limits_with(self.limits, options_size(opts))
                start = 0
                for end in codec.split(len(queue.encode()), list(map(len, b.bodies)), hsizes,
                                       max_batch, limits):
                    self._emit_publish(queue, b.bodies[start:end],
                                       headers[start:end] if headers else [],
                                       b.futs[start:end], many=False, opts=opts)
                    start = end
        if self.starting:
            self._materialize_starts(max_batch)
        ids, attempts = self._acks
        if ids:
            self._acks = ([], [])
            for i in range(0, len(ids), max_batch):
                self._out.append(codec.encode(f.Ack(ids[i:i + max_batch],
                                                    attempts[i:i + max_batch])))
        if self._nacks:
            nacks, self._nacks = self._nacks, {}
            for (requeue, delay_ms, reason), (nids, natt) in nacks.items():
                for i in range(0, len(nids), max_batch):
                    self._out.append(codec.encode(f.Nack(
                        nids[i:i + max_batch], natt[i:i + max_batch], requeue, delay_ms, reason)))
        if self._releases:
            rel, self._releases = self._releases, []
            for i in range(0, len(rel), max_batch):
                self._out.append(codec.encode(f.Release(rel[i:i + max_batch])))
        if self.owing:
            owing, self.owing = self.owing, []
            for consumer in owing:
                if consumer.owed and self.consumers.get(consumer.queue) is consumer:
                    self._credit[consumer.queue] = (self._credit.get(consumer.queue, 0)
                                                    + consumer.owed)
                consumer.owed = 0
        if self._credit:
            credit, self._credit = self._credit, {}
            for queue, n in credit.items():
                self._out.append(codec.encode(f.Credit(queue, n)))

    def _materialize_starts(self, max_batch: int) -> None:
        """START for messages taken and not settled this turn (those settled need none:
        in a consumer loop that acks as it goes, no START is ever sent)."""
        starting, self.starting = self.starting, []
        ids: list[int] = []
        attempts: list[int] = []
        for consumer in starting:
            consumer.taken_unsettled(ids, attempts)
        w = self.welcome
        if not ids or w is None or not w.starts:
            return
        for i in range(0, len(ids), max_batch):
            self._out.append(codec.encode(f.Start(ids[i:i + max_batch],
                                                  attempts[i:i + max_batch])))

    def _send_now(self, parts: list[bytes]) -> None:
        self._materialize()
        self._out.append(parts)
        self._flush()

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
                self._undecodable(parts, exc)
                continue
            self._on_frame(frame)
        if got:
            self._last_recv = self._loop.time()
            if self.broken is not None and not self._resuming and not self._said_bye and (
                    self._welcome_fut is None or self._welcome_fut.done()):
                # We gave the broker up, but it still talks to us: it kept our session,
                # which we have already failed. End that session and open a new one.
                log.info("broker at %s answers again; starting a new session", self.endpoint)
                self._send_now(codec.encode(f.Bye("client lost the broker")))
                self._resume()
        if self._out or self._batches or self._acks[0] or self._credit or self.owing:
            self._flush()

    def _undecodable(self, parts: list[bytes], exc: ZqError) -> None:
        """A frame from the broker we cannot decode: never dropped in silence.

        It is logged and kept in ``errors`` (where the application finds it). A reply
        fails the request it answers. A DELIVER whose ids can still be read is NACKed
        with the reason, so the broker counts the attempt and retries or dead-letters
        the messages instead of leaving them leased to us for as long as we live.
        """
        log.error("undecodable frame from broker: %s", exc)
        self.errors.append(exc)
        req = codec.reply_req(parts)
        r = self._requests.pop(req, None) if req is not None else None
        if r is not None and not r.fut.done():
            r.fut.set_exception(exc)  # the request fails instead of waiting for ever
        salvaged = codec.deliver_ids(parts)
        if salvaged is not None:
            ids, attempts = salvaged
            for mid, att in zip(ids, attempts, strict=True):
                self.nack(mid, att, True, 0, f"the client could not decode the DELIVER: "
                                             f"{exc.message}"[:1000])
            consumer = self.consumers.get(parts[1].decode("utf-8", "replace"))
            if consumer is not None and not consumer._closed:
                self.credit(consumer.queue, len(ids))  # it never saw them: window stays full

    def _on_frame(self, frame: f.Frame) -> None:
        match frame:
            case f.Deliver():
                consumer = self.consumers.get(frame.queue)
                if consumer is None:
                    self.release(frame.ids)
                else:
                    consumer._deliver(frame)
            case f.Confirm():
                self._on_confirm(frame)
            case f.Heartbeat():
                pass
            case f.Error():
                self._on_error(frame)
            case f.Welcome():
                if self._welcome_fut is not None and not self._welcome_fut.done():
                    self._welcome_fut.set_result(frame)
                    self._welcome_fut = None
                else:
                    self._on_rewelcome(frame)
            case f.StatsReply():
                self._reply(frame.req, frame.stats)
            case f.ManageReply():
                self._reply(frame.req, frame.result)
            case f.Bye():
                self._said_bye = True  # a restarted broker will answer SESSION_UNKNOWN
                self._lost(ConnectionLost(f"broker said BYE: {frame.reason}",
                                          endpoint=self.endpoint))
            case _:
                log.warning("unexpected frame from broker: %r", frame)

    def _reply(self, req: int, result: dict[str, Any]) -> None:
        r = self._requests.pop(req, None)
        if r is not None and not r.fut.done():
            r.fut.set_result(result)

    def _on_error(self, frame: f.Error) -> None:
        exc = error_from_code(frame.code, frame.text, op=frame.op, ref=frame.ref)
        if isinstance(exc, SessionUnknown):
            self._resume()
            self._void_requests(exc)
            return
        if frame.op == f.PUBLISH and isinstance(frame.ref, int):
            sent = self._sent.pop(frame.ref, None)
            if sent is not None:
                self.unconfirmed -= len(sent.bodies)
                for fut in sent.futs:
                    if not fut.done():
                        fut.set_exception(exc)
                self._release_window()
                return
        if frame.op in (f.STATS, f.MANAGE) and isinstance(frame.ref, int):
            r = self._requests.pop(frame.ref, None)
            if r is not None:
                if not r.fut.done():
                    r.fut.set_exception(exc)
                return
        if (self._waits and frame.op in (f.ACK, f.NACK) and isinstance(frame.ref, list)
                and self._claim(frame.ref, exc)):
            log.debug("broker refused a settlement waited on: %s", exc)
            return
        if frame.op == f.CREDIT and isinstance(frame.ref, str):
            consumer = self.consumers.get(frame.ref)
            if consumer is not None:
                consumer._fail(exc)
                return
        log.warning("broker error: %s", exc)
        self.errors.append(exc)
        if frame.code in _FATAL_CODES:
            self._lost(exc)

    # ------------------------------------------------------------ liveness

    def _arm_heartbeat(self) -> None:
        w = self.welcome
        interval = w.heartbeat_ms / 1000.0 if w else 1.0
        self._last_recv = self._loop.time()
        self._hb = self._loop.call_later(interval, self._on_heartbeat)

    def _on_heartbeat(self) -> None:
        w = self.welcome
        if self._sock is None or w is None:
            return
        interval = w.heartbeat_ms / 1000.0
        if readable(self._sock):
            # Read what waits first: after this process was stalled (SIGSTOP, a long
            # GC, a blocked loop) the timer runs before queued frames are read, and
            # the silence would be ours, not the broker's.
            self._on_readable()
            if self._sock is None:
                return
        now = self._loop.time()
        if self.broken is None and now - self._last_recv > interval * w.liveness:
            self._lost(ConnectionLost(
                f"broker at {self.endpoint} silent for {now - self._last_recv:.1f}s",
                endpoint=self.endpoint))
        if now - self._last_send >= interval * 0.5 or self.broken is not None:
            # While broken this reaches a restarted broker, which answers SESSION_UNKNOWN.
            self._send_now(codec.encode(f.Heartbeat()))
        self._hb = self._loop.call_later(interval, self._on_heartbeat)

    def _lost(self, exc: ZqError) -> None:
        """The broker is gone: fail what waits on it; stay ready to resume."""
        if self.broken is not None:
            return
        log.warning("%s", exc)
        self.broken = exc
        self.session.clear()
        self._fail_pending(exc)
        for consumer in list(self.consumers.values()):
            consumer._fail(exc)

    def _claim(self, ids: list[Any], exc: ZqError) -> bool:
        """Give a refused settlement's error to those waiting on it; whether all were."""
        claimed = True
        for mid in ids:
            waits = self._waits.get(mid) if isinstance(mid, int) else None
            w = next((w for w in waits if w.error is None), None) if waits else None
            if w is None:
                claimed = False
            else:
                w.error = exc  # the oldest wait on this id: errors come in sending order
        return claimed

    def _void_requests(self, exc: ZqError) -> None:
        """SESSION_UNKNOWN: requests sent before our latest HELLO were refused or lost.

        Reading and idempotent ones go out again once the new session is open;
        the others fail (they may or may not have taken effect).
        """
        for req, r in list(self._requests.items()):
            if r.epoch >= self._epoch or r.resend:
                continue
            if r.fut.done():
                del self._requests[req]
            elif r.op is None or r.op in _RESENDABLE:
                r.resend = True
            else:
                del self._requests[req]
                r.fut.set_exception(exc)

    def _fail_pending(self, exc: ZqError) -> None:
        sent, self._sent = self._sent, {}
        batches, self._batches = self._batches, {}
        futs = [fut for s in sent.values() for fut in s.futs]
        futs += [fut for b in batches.values() for fut in b.futs]
        futs += [r.fut for r in self._requests.values()]
        self._requests.clear()
        for fut in futs:
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # mark retrieved: nobody may be awaiting it any more
        self.unconfirmed = 0
        self._release_window()

    def _resume(self) -> None:
        """The broker does not know us (it restarted): open a new session."""
        w = self.welcome
        patience = (w.heartbeat_ms / 1000.0 * w.liveness) if w is not None else 3.0
        if self._welcome_fut is not None and not self._welcome_fut.done():
            return  # the first HELLO is on its way
        if self._resuming and self._loop.time() - self._resume_at < patience:
            return  # a HELLO is already on its way (one that got no WELCOME is sent again)
        log.info("broker lost our session; saying HELLO again")
        self._resuming = True
        self._resume_at = self._loop.time()
        self.session.clear()  # until the new WELCOME
        self._epoch += 1
        self._send_now(codec.encode(f.Hello(self.name, starts=True)))

    def _on_rewelcome(self, w: f.Welcome) -> None:
        """A new session after a broker restart: resend unconfirmed publishes, re-grant."""
        if not self._resuming:
            log.warning("unexpected WELCOME from broker")
            return
        self._resuming = False
        self._said_bye = False
        self._on_welcome(w)
        for seq, s in self._sent.items():
            self._out.append([codec.command(f.PUBLISH), s.queue.encode(), s.header(seq),
                              *s.bodies])
        for consumer in self.consumers.values():
            consumer._reset()
        for req, r in self._requests.items():
            if r.resend:
                r.resend = False
                r.epoch = self._epoch
                self._out.append(r.encode(req))
        self._flush()

