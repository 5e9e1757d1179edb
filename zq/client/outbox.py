"""What a client sends, coalesced per loop turn into as few frames as the broker allows.

No I/O: the connection feeds it publishes, settlements, credit and control frames
during a loop turn and takes the frames at the end of it (:meth:`Outbox.take`).
It also keeps the PUBLISH frames that wait for their CONFIRM, so that a new
session after a broker restart can send them again (:meth:`Outbox.resend`).

Frames come out in causal order: a control frame (CANCEL, EXTEND, MANAGE, STATS,
HELLO, ...) goes after everything requested before it, because it turns what
is coalesced so far into frames first (:meth:`Outbox.control`). Within one
turn the coalesced frames come in this order: publishes, START, ACK, NACK,
RELEASE, CREDIT (credit after the settlements that earned it).
"""

from __future__ import annotations

from typing import Any, Protocol

from zq.protocol import codec
from zq.protocol import frames as f


class Promise(Protocol):
    """What waits for an answer: an ``asyncio.Future`` in the client."""

    def done(self) -> bool: ...
    def set_result(self, result: Any, /) -> None: ...
    def set_exception(self, exception: BaseException, /) -> None: ...
    def exception(self) -> BaseException | None: ...


class Taker(Protocol):
    """The outbox's view of a consumer: the starts and the credit it owes the broker."""

    queue: str

    def taken_unsettled(self, ids: list[int], attempts: list[int]) -> None: ...
    def take_owed(self) -> int: ...


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


class Seqs:
    """The numbers of one client's PUBLISH frames and requests, shared by all its
    connections: the producer id is the client's, so no two frames of it, on any
    connection, may have the same seq (PROTOCOL.md section 11.4)."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = 0

    def next(self) -> int:
        self.last += 1
        return self.last


class Sent:
    """A PUBLISH frame waiting for its CONFIRM (kept for resending after a broker restart,
    or sending elsewhere when its node is lost or its queue MOVED)."""

    __slots__ = ("frame", "futs", "hops", "many")

    def __init__(self, frame: f.Publish, futs: list[Promise], many: bool) -> None:
        self.frame = frame
        self.futs = futs  # one per body, or one for the whole frame when ``many``
        self.many = many
        self.hops = 0  # MOVED answers it followed

    def resolve(self, first: int, count: int) -> None:
        """CONFIRM: the bodies got the ids ``first .. first + count - 1`` (``first`` 0: a
        topic dropped them, no binding matched: each gets id 0)."""
        step = 1 if first else 0
        if self.many:
            fut = self.futs[0]
            if not fut.done():
                fut.set_result([first + i * step for i in range(count)])
        else:
            for i, fut in enumerate(self.futs):
                if not fut.done():
                    fut.set_result(first + i * step)

    def reject(self, exc: BaseException) -> None:
        """An ERROR for this PUBLISH: nothing of it was stored."""
        for fut in self.futs:
            if not fut.done():
                fut.set_exception(exc)


class Batch:
    """Publishes to one queue (with the same options) requested during this loop turn."""

    __slots__ = ("bodies", "futs", "has_headers", "headers", "opts", "queue")

    def __init__(self, queue: str, opts: f.Options | None = None) -> None:
        self.queue = queue
        self.opts = opts
        self.bodies: list[bytes] = []
        self.headers: list[f.Headers | None] = []
        self.futs: list[Promise] = []
        self.has_headers = False


class Outbox:
    """The frames of one client session, in the making and in flight.

    ``limits``, ``max_batch`` and ``starts`` are the broker's terms (from its
    WELCOME, see :meth:`welcome`): publishes are split to fit them, and START is
    sent only to a broker that understands it.
    """

    def __init__(self, seqs: Seqs | None = None) -> None:
        self.limits = codec.DEFAULT_LIMITS
        self.max_batch = 1000
        self.starts = False
        self.frames: list[list[bytes]] = []  # ready to send, in order
        # Keyed by queue name for publishes without options (the hot path), by
        # (queue, options) with options, and by (queue, options, n) with a dedup_id.
        self.batches: dict[Any, Batch] = {}
        self._solo = 0
        self.acks: tuple[list[int], list[int]] = ([], [])
        self.nacks: dict[tuple[bool, int, str], tuple[list[int], list[int]]] = {}
        self.releases: list[int] = []
        self.starting: list[Taker] = []  # consumers whose application took messages
        self.owing: list[Taker] = []  # consumers with credit earned by settling
        self.credit: dict[str, int] = {}
        self.seqs = seqs if seqs is not None else Seqs()  # PUBLISH seqs and request numbers
        self.sent: dict[int, Sent] = {}  # PUBLISH frames awaiting their answer
        self.unconfirmed = 0  # messages published and not yet answered
        self.resent = 0  # PUBLISH frames sent again in a new session

    def welcome(self, w: f.Welcome) -> None:
        """A session opened: the broker's terms from now on."""
        self.limits = codec.Limits(max_frame=w.max_frame,
                                   max_batch=max(w.max_batch, w.max_credit, 10_000))
        self.max_batch = w.max_batch
        self.starts = w.starts

    @property
    def seq(self) -> int:
        """The latest seq or request number taken (by any outbox sharing ``seqs``)."""
        return self.seqs.last

    def next_seq(self) -> int:
        return self.seqs.next()

    # ------------------------------------------------------------ publishing

    def publish(self, queue: str, body: bytes, headers: f.Headers | None, fut: Promise) -> None:
        """One message without options (the hot path): joins this turn's batch."""
        batch = self.batches.get(queue)
        if batch is None:
            batch = self.batches[queue] = Batch(queue)
        batch.bodies.append(body)
        batch.headers.append(headers)
        batch.futs.append(fut)
        if headers is not None:
            batch.has_headers = True
        self.unconfirmed += 1

    def publish_opts(self, queue: str, body: bytes, headers: f.Headers | None,
                     opts: f.Options, fut: Promise) -> None:
        """One message with options: shares a frame only with the same options, and
        a message with a ``dedup_id`` travels alone."""
        key: tuple[Any, ...]
        if opts.dedup_id is not None:
            self._solo += 1
            key = (queue, opts, self._solo)
        else:
            key = (queue, opts)
        batch = self.batches.get(key)
        if batch is None:
            batch = self.batches[key] = Batch(queue, opts)
        batch.bodies.append(body)
        batch.headers.append(headers)
        batch.futs.append(fut)
        if headers is not None:
            batch.has_headers = True
        self.unconfirmed += 1

    def publish_frame(self, queue: str, bodies: list[bytes], headers: list[f.Headers | None],
                      fut: Promise, opts: f.Options | None = None) -> None:
        """One PUBLISH frame for ``bodies`` at once; ``fut`` gets the list of ids."""
        self.unconfirmed += len(bodies)
        self._emit(queue, bodies, headers, [fut], True, opts)

    def _emit(self, queue: str, bodies: list[bytes], headers: list[f.Headers | None],
              futs: list[Promise], many: bool, opts: f.Options | None) -> None:
        seq = self.next_seq()
        frame = f.Publish(queue, seq, bodies, headers, opts)
        self.sent[seq] = Sent(frame, futs, many)
        self.frames.append(codec.encode(frame))

    def answered(self, seq: int) -> Sent | None:
        """The PUBLISH ``seq`` was confirmed or refused: no longer waits (None: not ours,
        or answered already, as when a frame resent after a broker restart is confirmed)."""
        sent = self.sent.pop(seq, None)
        if sent is not None:
            self.unconfirmed -= len(sent.frame.bodies)
        return sent

    def resend(self) -> None:
        """A new session: every PUBLISH not answered goes out again, with its seq."""
        for sent in self.sent.values():
            self.frames.append(codec.encode(sent.frame))
        self.resent += len(self.sent)

    def hand_over(self) -> list[Sent]:
        """The node is lost and another connection takes over: every PUBLISH not
        answered, in seq order (those still coalescing become frames first). This
        outbox forgets them and sends none of them again."""
        if self.batches:
            self._publishes()
        publish = codec.command(f.PUBLISH)
        self.frames = [p for p in self.frames if p[0] != publish]
        sent, self.sent = self.sent, {}
        for s in sent.values():
            self.unconfirmed -= len(s.frame.bodies)
        return sorted(sent.values(), key=lambda s: s.frame.seq)

    def adopt(self, sents: list[Sent], resent: bool = True) -> None:
        """PUBLISH frames another connection sent and has no answer for: they go
        out here, each with its seq (the broker knows a resend by producer and seq).
        ``resent``: count them in :attr:`resent` (a failover, not a MOVED)."""
        for s in sents:
            self.sent[s.frame.seq] = s
            self.unconfirmed += len(s.frame.bodies)
            self.frames.append(codec.encode(s.frame))
        if resent:
            self.resent += len(sents)

    def drop(self) -> list[Promise]:
        """Forget every publish not answered (the session is lost); their futures."""
        sent, self.sent = self.sent, {}
        batches, self.batches = self.batches, {}
        futs = [fut for s in sent.values() for fut in s.futs]
        futs += [fut for b in batches.values() for fut in b.futs]
        self.unconfirmed = 0
        return futs

    # ------------------------------------------------------------ consuming

    def ack(self, mid: int, attempt: int) -> None:
        self.acks[0].append(mid)
        self.acks[1].append(attempt)

    def nack(self, mid: int, attempt: int, requeue: bool, delay_ms: int, reason: str) -> None:
        key = (requeue, delay_ms, reason)
        pair = self.nacks.get(key)
        if pair is None:
            pair = self.nacks[key] = ([], [])
        pair[0].append(mid)
        pair[1].append(attempt)

    def release(self, ids: list[int]) -> None:
        self.releases.extend(ids)

    def grant(self, queue: str, n: int) -> None:
        self.credit[queue] = self.credit.get(queue, 0) + n

    def cancel(self, queue: str) -> None:
        """CANCEL ``queue``: credit not sent yet is void."""
        self.credit.pop(queue, None)
        self.control(codec.encode(f.Cancel(queue)))

    def note_starting(self, taker: Taker) -> None:
        """``taker`` has messages its application took: at the end of this turn a
        START names those not settled by then."""
        self.starting.append(taker)

    def owe(self, taker: Taker) -> None:
        """``taker`` earned credit by settling (see :meth:`Taker.take_owed`)."""
        self.owing.append(taker)

    def forget(self, taker: Taker) -> None:
        """``taker`` left this connection: no START or credit of it goes out here."""
        if taker in self.starting:
            self.starting = [t for t in self.starting if t is not taker]
        if taker in self.owing:
            self.owing = [t for t in self.owing if t is not taker]

    # ------------------------------------------------------------ frames

    def control(self, parts: list[bytes]) -> None:
        """A control frame, after everything requested before it (order is causal)."""
        self.materialize()
        self.frames.append(parts)

    def append(self, parts: list[bytes]) -> None:
        """A frame after the frames made so far, before what is still coalescing."""
        self.frames.append(parts)

    @property
    def empty(self) -> bool:
        """Nothing to send."""
        return not (self.frames or self.batches or self.acks[0] or self.nacks
                    or self.releases or self.starting or self.owing or self.credit)

    @property
    def urgent(self) -> bool:
        """Frames, publishes, acks or credit wait (worth sending before the turn ends)."""
        return bool(self.frames or self.batches or self.acks[0] or self.credit or self.owing)

    def take(self) -> list[list[bytes]]:
        """Everything to send now, in order; the outbox is empty afterwards."""
        self.materialize()
        out, self.frames = self.frames, []
        return out

    def materialize(self) -> None:
        """Turn this turn's coalesced publishes, settlements and credit into frames."""
        if self.batches:
            self._publishes()
        if self.starting:
            self._starts()
        if self.acks[0] or self.nacks or self.releases:
            self._settlements()
        if self.owing or self.credit:
            self._credits()

    def _publishes(self) -> None:
        batches, self.batches = self.batches, {}
        for b in batches.values():
            queue, opts = b.queue, b.opts
            headers = b.headers if b.has_headers else []
            hsizes = [codec.header_size(h) for h in headers] if headers else None
            limits = self.limits if opts is None else \
                limits_with(self.limits, options_size(opts))
            start = 0
            for end in codec.split(len(queue.encode()), list(map(len, b.bodies)), hsizes,
                                   self.max_batch, limits):
                self._emit(queue, b.bodies[start:end], headers[start:end] if headers else [],
                           b.futs[start:end], False, opts)
                start = end

    def _starts(self) -> None:
        """START for messages taken and not settled this turn (those settled need none:
        in a consumer loop that acks as it goes, no START is ever sent)."""
        starting, self.starting = self.starting, []
        ids: list[int] = []
        attempts: list[int] = []
        for taker in starting:
            taker.taken_unsettled(ids, attempts)
        if not ids or not self.starts:
            return
        step = self.max_batch
        for i in range(0, len(ids), step):
            self.frames.append(codec.encode(f.Start(ids[i:i + step], attempts[i:i + step])))

    def _settlements(self) -> None:
        step = self.max_batch
        out = self.frames
        ids, attempts = self.acks
        if ids:
            self.acks = ([], [])
            for i in range(0, len(ids), step):
                out.append(codec.encode(f.Ack(ids[i:i + step], attempts[i:i + step])))
        nacks, self.nacks = self.nacks, {}
        for (requeue, delay_ms, reason), (nids, natt) in nacks.items():
            for i in range(0, len(nids), step):
                out.append(codec.encode(f.Nack(nids[i:i + step], natt[i:i + step],
                                               requeue, delay_ms, reason)))
        rel, self.releases = self.releases, []
        for i in range(0, len(rel), step):
            out.append(codec.encode(f.Release(rel[i:i + step])))

    def _credits(self) -> None:
        owing, self.owing = self.owing, []
        for taker in owing:
            n = taker.take_owed()
            if n:
                self.grant(taker.queue, n)
        credit, self.credit = self.credit, {}
        for queue, n in credit.items():
            self.frames.append(codec.encode(f.Credit(queue, n)))
