"""Topics: names that queues bind to, and a PUBLISH to one stored once in every bound
queue whose binding matches its key (PROTOCOL.md section 20). No I/O.

A binding is a queue and a pattern: none (the queue gets every publish to the topic),
an exact key, or a pattern with ``*`` (one dot-separated word) and ``#`` (any number of
words), as in permissions. A PUBLISH with the option ``key`` goes to the topic named in
its frame 1; each matching queue gets one copy of each body (a queue bound twice gets
one), all staged in the current batch, so that one commit stores every copy or none,
and one CONFIRM answers the frame. The copies' ids follow each other: the j-th
matching queue, by name, gets ``first + j * count`` onwards, and the CONFIRM names the
first queue's. A publish that matches nothing is refused with UNROUTABLE, or (a topic
set so) counted and dropped, confirmed with ``first_id`` 0.

The store keeps a topic as a settings row named ``TOPIC_PREFIX + name`` (no queue name
holds a NUL), so that it is replicated and backed up with the queues' settings.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from zq.core.intake import Intake
from zq.core.journal import PendingPublish
from zq.core.model import Peer, Queue
from zq.core.state import Extra, _packb
from zq.errors import FrameTooLarge, QueueFull, ShuttingDown, Unroutable
from zq.persistence.base import SharedBodies
from zq.protocol import codec
from zq.protocol import frames as f
from zq.security.permissions import Pattern

TOPIC_PREFIX = "\x00topic\x00"
UNROUTABLE = ("refuse", "drop")  # what a publish that matches no binding gets
MAX_BINDINGS = 1_000  # per topic
MAX_TOPICS = 10_000
MAX_CACHED = 1_024  # keys whose matching queues a topic remembers
_RESENT = Queue("-")  # what a resent topic publish's answer names (no queue is touched)


class Binding:
    __slots__ = ("pattern", "queue", "text")

    def __init__(self, queue: str, text: str | None) -> None:
        self.queue = queue
        self.text = text  # None: every key
        self.pattern = None if text is None else Pattern.compile(text)

    def matches(self, key: str) -> bool:
        p = self.pattern
        if p is None:
            return True
        if "*" not in p.words and "#" not in p.words:
            return key == p.text
        return bool(key) and p.matches(key)


class Topic:
    """A topic's bindings, its rule for unroutable publishes, and its counters."""

    __slots__ = ("bindings", "cache", "copies", "dropped", "name", "published", "refused",
                 "unroutable")

    def __init__(self, name: str, unroutable: str = "refuse") -> None:
        self.name = name
        self.bindings: list[Binding] = []
        self.unroutable = unroutable
        self.cache: dict[str, list[str]] = {}
        self.published = self.copies = self.dropped = self.refused = 0

    def match(self, key: str) -> list[str]:
        """The queues a publish with ``key`` goes to, each once, by name."""
        hit = self.cache.get(key)
        if hit is None:
            if len(self.cache) >= MAX_CACHED:
                self.cache.clear()
            hit = self.cache[key] = sorted({b.queue for b in self.bindings if b.matches(key)})
        return hit

    def find(self, queue: str, pattern: str | None) -> Binding | None:
        return next((b for b in self.bindings if b.queue == queue and b.text == pattern),
                    None)

    def to_map(self) -> dict[str, Any]:
        return {"bindings": [[b.queue, b.text] for b in self.bindings],
                "unroutable": self.unroutable}

    @classmethod
    def from_map(cls, name: str, d: dict[str, Any]) -> Topic:
        t = cls(name, str(d.get("unroutable", "refuse")))
        t.bindings = [Binding(str(q), None if p is None else str(p))
                      for q, p in d.get("bindings", [])]
        return t

    def stats(self) -> dict[str, Any]:
        return {"topic": self.name, "unroutable": self.unroutable,
                "bindings": [{"queue": b.queue, "pattern": b.text} for b in self.bindings],
                "published": self.published, "copies": self.copies,
                "dropped": self.dropped, "refused": self.refused}


class Topics(Intake):
    """PUBLISH frames to topics: every matching bound queue gets a copy."""

    def stage_topic(self, t: Topic) -> None:
        """Store ``t``'s bindings and settings (a topic with none is removed)."""
        keep = bool(t.bindings) or t.unroutable != "refuse"
        self.journal.settings(TOPIC_PREFIX + t.name,
                              _packb({"topic": t.to_map()}) if keep else None)

    def unbind_all(self, queue: str) -> int:
        """Remove every binding of ``queue`` (it is deleted); how many there were."""
        n = 0
        for t in list(self.topics.values()):
            kept = [b for b in t.bindings if b.queue != queue]
            if len(kept) != len(t.bindings):
                n += len(t.bindings) - len(kept)
                t.bindings = kept
                t.cache.clear()
                self.stage_topic(t)
                if not kept and t.unroutable == "refuse":
                    del self.topics[t.name]
        return n

    def on_topic_publish(self, peer: Peer, frame: f.Publish, now: float) -> None:
        if peer.producer and self._resent_topic(peer, frame):
            return
        opts = frame.opts
        assert opts is not None
        assert opts.key is not None
        n = len(frame.bodies)
        if self.stopping:
            raise ShuttingDown("broker is shutting down; message not stored", ref=frame.seq)
        if n > self.cfg.max_publish_batch:
            raise FrameTooLarge(f"{n} bodies exceed {self.cfg.max_publish_batch}",
                                ref=frame.seq, limit=self.cfg.max_publish_batch)
        t = self.topics.get(frame.queue)
        if t is None and self.membership is not None:  # its broker may be another
            self.may_create(frame.queue, peer, frame.seq)
        if t is None:
            raise Unroutable(f"no topic named {frame.queue!r}: bind a queue to it first "
                             f"(zq topic bind)", ref=frame.seq)
        names = t.match(opts.key)
        if not names:
            self._unroutable(peer, frame, t, opts.key)
            return
        if n * len(names) > self.cfg.commit_max:
            raise FrameTooLarge(
                f"topic {t.name!r}: {n} bodies x {len(names)} matching queues make "
                f"{n * len(names)} copies, more than one commit takes (commit_max "
                f"{self.cfg.commit_max}): publish fewer bodies per frame", ref=frame.seq,
                info={"limit": max(1, self.cfg.commit_max // len(names))})
        qs = [self.queues.get(name) or self._queue(name) for name in names]
        drops = [self._room(q, n, frame.seq) for q in qs]  # refused before any change
        self._stage_copies(peer, frame, qs, drops, now)
        t.published += n
        t.copies += n * len(qs)

    def _stage_copies(self, peer: Peer, frame: f.Publish, qs: list[Queue], drops: list[int],
                      now: float) -> None:
        """One copy per queue, ids in a row, in the current batch; the first copy's
        publish is the one confirmed."""
        n = len(frame.bodies)
        first = self.next_id
        self.next_id = first + n * len(qs) + (1 if any(q.forward for q in qs) else 0)
        opts = replace(frame.opts, key=None) if frame.opts is not None else None
        if opts is not None and not opts.to_map():
            opts = None
        headers = frame.headers or None
        bodies: list[bytes] = frame.bodies
        if len(qs) > 1:  # stored once, each copy's rows pointing there
            bodies = SharedBodies(frame.bodies, first)
            self.journal.share(first, frame.bodies, len(qs))
        for j, q in enumerate(qs):
            q.to_drop += drops[j]
            extra = self._extra(q, opts, now)
            fj = first + j * n
            self.journal.publish(PendingPublish(peer if j == 0 else None, q, frame.seq, fj,
                                                bodies, headers, extra, at=now))
            q.staged += n
            if extra is not None:
                self._stage_placed(q, fj, n, extra)
        if peer.producer:
            self.producers.put(peer.producer, frame.seq, first, n, now)
            self.journal.produced(peer.producer, frame.seq, first, n)

    def _extra(self, q: Queue, opts: f.Options | None, now: float) -> Extra | None:
        if opts is None:
            return None
        due = now + opts.delay_ms / 1000.0 if opts.delay_ms else 0.0
        if opts.eta_ms:
            due = max(due, opts.eta_ms / 1000.0 - self.wall_offset)
        ttl = opts.ttl_ms / 1000.0 if opts.ttl_ms else q.settings.ttl
        return (opts, due, now + ttl if ttl else 0.0)

    def _unroutable(self, peer: Peer, frame: f.Publish, t: Topic, key: str) -> None:
        n = len(frame.bodies)
        if t.unroutable == "drop":
            t.dropped += n
            self.counters["unroutable_dropped"] += n
            self._after_commit(peer.identity, codec.encode_confirm([[frame.seq, 0, n]]))
            return
        t.refused += n
        raise Unroutable(f"topic {t.name!r}: no binding matches key {key!r}", ref=frame.seq,
                         topic=t.name)

    @staticmethod
    def _room(q: Queue, n: int, seq: int) -> int:
        """How many of ``q``'s oldest to drop for ``n`` more (its max_length), or
        QUEUE_FULL; changes nothing."""
        s = q.settings
        if not s.max_length:
            return 0
        length = q.ready_count() + q.disk + q.delayed + q.staged
        if length + n <= s.max_length:
            return 0
        drop = q.overflow.on_full(length, s.max_length, n)
        if drop < 0:
            raise QueueFull(f"queue {q.name!r} holds {length} of its maximum length of "
                            f"{s.max_length}: no room for {n} more", ref=seq, queue=q.name,
                            limit=s.max_length)
        return int(drop)

    def _resent_topic(self, peer: Peer, frame: f.Publish) -> bool:
        hit = self.producers.get(peer.producer, frame.seq)
        if hit is None or hit[1] != len(frame.bodies):
            return False
        self.counters["resent"] += 1
        self.journal.publish(PendingPublish(peer, _RESENT, frame.seq, hit[0], [], None, None,
                                            hit[1]))
        return True
