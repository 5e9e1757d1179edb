"""Streams: retained, append-only logs that consumer groups read (PROTOCOL.md section 21).
No I/O.

A stream is declared under a name that then takes publishes as a queue does, but
its messages (*entries*) are appended to a log and kept until retention removes
them, not when they are consumed. An entry's *offset* is its message id: offsets
increase along the stream (they are not contiguous: ids are shared with the queues).

Any number of *groups* read a stream, each from its own place. A group is read
through a :class:`Queue` of its own (named as the stream, not in the broker's table
of queues), so that delivery, credit, acks, retries, time limits and a lost
consumer's redelivery are those of a queue; only where its messages come from and
what an ack means differ. The group's queue holds a window of entries in memory
(``cursor``: the last entry taken in, ``disk``: how many follow in the store) and
pages the rest in from the store as it drains. An ack does not delete the entry:
it moves the group's *committed* offset, below which every entry is done, and that
is stored with the batch. After a restart a group reads on from its committed
offset, so entries delivered and not acked then are delivered again (at least once).

The store keeps a stream's entries apart from queue messages, under the name
``STREAM_PREFIX + stream``; its settings in that name's settings row, and each
group's committed offset in a settings row named ``GROUP_PREFIX + stream + NUL +
group`` (names hold no NUL). Retention (``max_age``, ``max_bytes``) removes the
oldest entries as a purge staged in a batch, so a standby does the same.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from zq.core.journal import PendingPublish
from zq.core.model import Msg, Peer, Queue
from zq.core.state import _packb
from zq.core.topics import Topics
from zq.errors import InvalidArgument, UnknownQueue
from zq.persistence.base import StoredMessage
from zq.protocol import codec
from zq.protocol import frames as f
from zq.settings import QueueSettings

STREAM_PREFIX = "\x00stream\x00"
GROUP_PREFIX = "\x00group\x00"
MAX_STREAMS = 1_000
MAX_GROUPS = 100  # per stream
TRIM_ROWS = 50_000  # entries one retention pass removes at most (one purge)
TRIM_SLACK = 0.05  # retention by size removes down to this much below the limit
EVERYTHING = 1 << 62  # an offset above every entry
IDLE_WINDOW = 1_000  # entries a group with no consumer takes into memory as they come

# Where a group starts: ("first",), ("last",), ("next",), ("offset", n), ("time", wall).
Start = tuple[Any, ...]


class Group:
    """One consumer group of a stream: its queue, and which entries it has done."""

    __slots__ = ("dirty", "done", "epoch", "gone", "key", "name", "out", "q", "seek",
                 "stream")

    def __init__(self, stream: Stream, name: str) -> None:
        self.stream = stream
        self.name = name
        self.key = GROUP_PREFIX + stream.name + "\x00" + name
        # Dead messages are skipped (a stream has no dead-letter queue).
        self.q = Queue(stream.name, QueueSettings(dlq="-"))
        self.q.group = self
        self.out: deque[int] = deque()  # ids taken into memory and not done, in order
        self.done: set[int] = set()  # of those, the ones done out of order
        self.seek: Start | None = None  # a place to look up in the store first
        self.dirty = False  # its committed offset changed since it was staged
        self.gone = False  # deleted (with its stream, or on its own)
        self.epoch = 0  # placements so far: a read asked for before the last is stale

    def read_key(self) -> str:
        """The name its pages and seeks are asked for by: a read that comes back after
        the group was placed again (reset) is dropped (:meth:`Streams.group_by_key`)."""
        return f"{self.key}\x00{self.epoch}"

    def committed(self) -> int:
        """The offset up to which every entry is done (acked or skipped)."""
        return self.out[0] - 1 if self.out else self.q.cursor

    def finished(self, mid: int) -> None:
        """Entry ``mid`` is done in this group (acked, or dead)."""
        out = self.out
        if out and out[0] == mid:
            out.popleft()
            done = self.done
            while out and out[0] in done:
                done.discard(out.popleft())
            self.dirty = True
        else:
            self.done.add(mid)

    def pending(self) -> int | None:
        """Entries this group has not done yet (None: not known until its seek is read)."""
        if self.seek is not None:
            return None
        return len(self.out) - len(self.done) + self.q.disk

    def stats(self) -> dict[str, Any]:
        q = self.q
        return {"group": self.name, "committed": None if self.seek else self.committed(),
                "pending": self.pending(), "start": None if not self.seek else list(self.seek),
                "in_memory": q.ready_count(), "consumers": len(q.subs),
                "delivered": q.delivered, "acked": q.acked, "redelivered": q.redelivered,
                "dead": q.dead}


class Stream:
    """A stream's retention settings, what it holds, and its groups."""

    __slots__ = ("appended", "bytes", "count", "first", "first_created", "floor", "groups",
                 "key", "last", "max_age", "max_bytes", "name", "q", "trimmed")

    def __init__(self, name: str, max_age: float = 0.0, max_bytes: int = 0) -> None:
        self.name = name
        self.key = STREAM_PREFIX + name
        self.max_age = max_age  # seconds; 0 = no limit
        self.max_bytes = max_bytes  # bytes of bodies; 0 = no limit
        self.groups: dict[str, Group] = {}
        self.count = 0  # entries held
        self.bytes = 0  # their bodies' size
        self.first = 0  # offset of the oldest entry held (0: none)
        self.last = 0  # offset of the newest entry ever appended (0: none)
        self.first_created = 0.0  # wall clock of the oldest entry held (0: unknown)
        self.floor = 0  # entries up to this offset are removed (their purge staged)
        self.appended = 0  # entries appended (this process)
        self.trimmed = 0  # entries removed by retention (this process)
        self.q = Queue(name)
        self.q.stream = self

    def to_map(self) -> dict[str, Any]:
        return {"max_age": self.max_age, "max_bytes": self.max_bytes}

    def stats(self) -> dict[str, Any]:
        return {"stream": self.name, "entries": self.count, "bytes": self.bytes,
                "first": self.first, "last": self.last, "max_age": self.max_age,
                "max_bytes": self.max_bytes, "appended": self.appended,
                "trimmed": self.trimmed,
                "groups": [g.stats() for g in sorted(self.groups.values(), key=_name)]}


def _name(g: Group) -> str:
    return g.name


class Streams(Topics):
    """Appends to streams, their groups' reading, and retention."""

    # ------------------------------------------------------------- appends

    def _queue_published(self, p: PendingPublish) -> Queue:
        s = p.q.stream
        if s is None:
            return super()._queue_published(p)
        if self.streams.get(s.name) is not s:  # deleted while this publish was stored
            return p.q
        bodies, first = p.bodies, p.first
        n = len(bodies)
        last = first + n - 1
        size = sum(map(len, bodies))
        if not s.count:
            s.first, s.first_created = first, self.now + self.wall_offset
        s.count += n
        s.bytes += size
        s.last = max(s.last, last)
        s.appended += n
        if s.max_bytes and s.bytes > s.max_bytes:
            self._over.add(s)  # retention goes at once, not at the next second
        q = p.q
        q.staged -= n
        q.published += n
        self.counters["published"] += n
        now = p.at or self.now
        for g in s.groups.values():
            self._take_appended(g, first, bodies, p.headers, size, now)
        return q

    def _take_appended(self, g: Group, first: int, bodies: list[bytes],
                       headers: list[Any] | None, size: int, now: float) -> None:
        """New entries for a group: into its memory if it is caught up and has room, else
        counted on disk (read when it gets there)."""
        q = g.q
        n = len(bodies)
        if g.seek is not None or first + n - 1 <= q.cursor:
            return  # its seek reads them; or a page read them already
        cfg = self.cfg
        # A group nobody reads keeps only the next few in memory (it pages the rest in
        # when a consumer comes): a hundred idle groups do not hold the stream 100 times.
        window = cfg.window if q.subs else min(cfg.window, IDLE_WINDOW)
        if q.disk or q.ready_count() >= window or q.mem_bytes >= cfg.window_bytes:
            if not q.disk:
                self._spilled.add(q)
            q.disk += n
            return
        hsize = codec.header_size
        ready = q.default.msgs
        for i, body in enumerate(bodies):
            mid = first + i
            if mid <= q.cursor:
                continue
            h = headers[i] if headers else None
            ready.append(Msg(mid, q, body, h, 0, hsize(h) if h is not None else 0, now))
            g.out.append(mid)
        q.cursor = first + n - 1
        q.mem_bytes += size
        self._dirty.add(q)

    def _admitted(self, peer: Peer, frame: f.Publish) -> Queue:
        q = super()._admitted(peer, frame)
        if q.stream is not None and frame.opts is not None:
            taken = set(frame.opts.to_map()) - {"dedup_id"}
            if taken:
                raise InvalidArgument(
                    f"stream {q.name!r}: an entry takes no {', '.join(sorted(taken))} (only "
                    f"headers and a dedup id; groups read entries in order)", ref=frame.seq)
        return q

    # ------------------------------------------------------------- reading

    def group_queue(self, peer: Peer, s: Stream | None, ref: Any) -> Queue:
        """The queue ``peer`` reads stream ``s`` through: that of the group it joined."""
        g = peer.groups.get(s.name) if s is not None else None
        if g is None or g.gone or g.stream is not s:
            name = s.name if s is not None else ref
            if s is None or g is not None:
                raise UnknownQueue(f"stream {name!r} or its group was deleted", ref=ref)
            raise InvalidArgument(
                f"{name!r} is a stream: it is read in a consumer group (zq consume "
                f"{name} --group G; client.consume({name!r}, group=...); MANAGE "
                f"stream_join before CREDIT)", ref=ref)
        return g.q

    def _dead(self, m: Msg, reason: str, now: float) -> None:
        super()._dead(m, reason, now)
        g = m.q.group
        if g is not None:  # skipped in its group (a stream has no dead-letter queue)
            g.finished(m.id)

    def group_paged(self, g: Group, limit: int, stored: list[StoredMessage], now: float
                    ) -> None:
        """Entries read from the store for ``g`` (after its cursor, in id order)."""
        q = g.q
        if g.gone:
            return
        wall = now - self.wall_offset
        hsize = codec.header_size
        ready = q.default.msgs
        took = 0
        for sm in stored:
            if sm.id <= q.cursor:
                continue
            ready.append(Msg(sm.id, q, sm.body, sm.headers, 0,
                             hsize(sm.headers) if sm.headers is not None else 0,
                             sm.created + wall if sm.created else now))
            g.out.append(sm.id)
            q.cursor = sm.id
            q.mem_bytes += len(sm.body)
            took += 1
        q.disk = max(0, q.disk - len(stored))
        if len(stored) < limit:
            q.disk = 0
        if not q.disk:
            self._spilled.discard(q)
        if took:
            self._dirty.add(q)

    def wanted_seeks(self) -> list[tuple[str, Start]]:
        """(group key, start) of groups whose start must be looked up in the store."""
        return [(g.read_key(), g.seek) for g in self._seeking if g.seek is not None]

    def sought(self, key: str, first: int, count: int) -> None:
        """A group's start, looked up: the first entry at or after it (0: none) and how
        many entries there are from there on."""
        g = self.group_by_key(key)
        if g is None or g.seek is None:
            return
        self._seeking.discard(g)
        start, g.seek = g.seek, None
        q = g.q
        q.cursor = first - 1 if first else max(g.stream.last, g.stream.floor)
        if not first and start[0] == "offset":  # not reached yet: from that offset on
            q.cursor = max(q.cursor, int(start[1]) - 1)
        q.disk = count if first else 0
        if q.disk:
            self._spilled.add(q)
        g.dirty = True
        self._dirty.add(q)

    def group_by_key(self, key: str) -> Group | None:
        """The group a read was asked for (:meth:`Group.read_key`), None if it is gone or
        was placed again since."""
        stream, group, epoch = [*key[len(GROUP_PREFIX):].split("\x00"), "", ""][:3]
        s = self.streams.get(stream)
        g = None if s is None else s.groups.get(group)
        return g if g is not None and str(g.epoch) == epoch else None

    def place_group(self, g: Group, start: Start) -> None:
        """Start (or restart) ``g`` at ``start``; it holds nothing in memory."""
        s, q = g.stream, g.q
        kind = start[0]
        g.epoch += 1
        self._spilled.discard(q)
        self._seeking.discard(g)
        g.seek = None
        q.disk = 0
        if kind == "first":
            q.cursor = s.floor
            q.disk = s.count
        elif kind == "last" and s.count:
            q.cursor = s.last - 1
            q.disk = 1
        elif kind in ("last", "next"):
            q.cursor = max(s.last, s.floor)
        else:  # an offset or a time: the store knows where that is
            g.seek = start
            self._seeking.add(g)
        if q.disk:
            self._spilled.add(q)
        g.dirty = True

    def clear_group(self, g: Group) -> None:
        """Drop what ``g`` holds in memory (it has no consumer and nothing in flight)."""
        q = g.q
        for pool in q.pools():
            pool.clear()
        self.remove_delayed(q)
        q.mem_bytes = 0
        g.out.clear()
        g.done.clear()

    def _drop_removed(self, g: Group, upto: int) -> None:
        """Entries up to ``upto`` that retention removed and ``g`` holds in memory, not
        delivered: they go (a group reads what the stream holds; those in flight stay
        with their consumers)."""
        q = g.q
        for pool in q.pools():
            while pool and pool[0].id <= upto:
                m = pool.popleft()
                q.mem_bytes -= len(m.body)
                g.finished(m.id)

    def forget_group(self, g: Group) -> None:
        """``g`` is deleted: it pages and seeks no more."""
        self._spilled.discard(g.q)
        self._seeking.discard(g)

    def groups_done(self, msgs: list[Msg]) -> None:
        """Acked or dead group messages: their groups' committed offsets move."""
        for m in msgs:
            g = m.q.group
            if g is not None:
                g.finished(m.id)

    def stage_stream(self, s: Stream) -> None:
        self.journal.settings(s.key, _packb({"stream": s.to_map()}))

    def stage_groups(self) -> None:
        """Store the committed offset of every group whose offset moved (at take)."""
        for s in self.streams.values():
            for g in s.groups.values():
                if g.dirty:  # (a place still to look up is stored as such)
                    g.dirty = False
                    state = {"seek": list(g.seek)} if g.seek else {"committed": g.committed()}
                    self.journal.settings(g.key, _packb({"group": state}))

    # ------------------------------------------------------------ retention

    def wants_trims(self) -> bool:
        """Whether a stream holds more than its max_bytes (its retention is due now)."""
        return bool(self._over)

    def wanted_trims(self, wall: float, sizes: bool = False
                     ) -> list[tuple[str, int, float, int]]:
        """(stream key, floor, age cutoff (wall, 0: none), bytes to remove (0: none)) of
        streams past a retention limit (``sizes``: only those past their max_bytes)."""
        out: list[tuple[str, int, float, int]] = []
        over, self._over = self._over, set()
        for s in (over if sizes else self.streams.values()):
            if self.streams.get(s.name) is not s:
                continue
            if not s.count:
                continue
            cutoff = wall - s.max_age if s.max_age else 0.0
            if cutoff and s.first_created and s.first_created > cutoff:
                cutoff = 0.0
            excess = 0
            if s.max_bytes and s.bytes > s.max_bytes:
                excess = s.bytes - int(s.max_bytes * (1 - TRIM_SLACK))
            if cutoff or excess:
                out.append((s.key, s.floor, cutoff, excess))
        return out

    def trimmed(self, key: str, upto: int, count: int, size: int, first: int,
                first_created: float) -> None:
        """Retention found that entries above the stream's floor up to ``upto`` go
        (``count`` of them, ``size`` bytes; ``first``: the oldest one left, 0 none):
        their purge is staged, and groups that had not read them skip them."""
        s = self.streams.get(key[len(STREAM_PREFIX):])
        if s is None or upto <= s.floor:
            if s is not None and not count:
                s.first_created = first_created or s.first_created
            return
        self.journal.purge(s.key, s.floor, upto)
        s.floor = upto
        s.count = max(0, s.count - count)
        s.bytes = max(0, s.bytes - size)
        s.first = first if s.count else 0
        s.first_created = first_created
        s.trimmed += count
        if count and s.max_bytes and s.bytes > s.max_bytes:
            self._over.add(s)  # more than one trim takes: the next goes at once
        for g in s.groups.values():
            q = g.q
            self._drop_removed(g, upto)
            if g.seek is None and q.cursor < upto:
                q.cursor = upto
                if not g.out:
                    g.dirty = True
                # How many of its unread entries went is not known here, only that it
                # has no more than the stream holds; a short page ends its backlog.
                q.disk = min(q.disk, s.count)
                if not q.disk:
                    self._spilled.discard(q)
