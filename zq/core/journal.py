"""The journal: what the broker must store, staged per frame, and what waits for it. No I/O.

Every change the core makes that a durable store must keep goes through one of the
journal's ``stage`` methods; with a store that keeps nothing (``durable`` false)
they stage nothing, so no rule module branches on durability. The journal also
owns the one rule for a batch whose commit failed (:meth:`Journal.kept`): its new
messages are refused (their publishes are answered with the error), and
everything else (attempt numbers, history, deletes, queue settings, purges,
results, schedules) is kept, to be stored on its own at once and, failing that,
with the next batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from zq.persistence.base import Rewrite, WriteBatch

if TYPE_CHECKING:
    from zq.core.model import Msg, Peer, Queue, Sub
    from zq.protocol import frames as f

    # What new messages carry besides bodies: options, due time and expiry (monotonic).
    Extra = tuple[f.Options, float, float]


@dataclass(slots=True)
class PendingPublish:
    """A PUBLISH frame (or a schedule's message, ``peer`` None) not stored yet.

    A deduplicated publish has no ``bodies``; ``first`` is then the original's id and
    ``count`` how many ids the original got (1 for a dedup id, the frame's count for
    a resent frame of an idempotent producer).
    """

    peer: Peer | None
    q: Queue
    seq: int
    first: int
    bodies: list[bytes]
    headers: list[f.Headers | None] | None
    extra: Extra | None
    count: int = 0
    src: int = 0  # moved here: its id on the broker it came from (section 17.5)
    attempts: int = 0  # moved here: the deliveries it had there
    at: float = 0.0  # when its frame was received (monotonic), for the confirm latency


@dataclass(slots=True)
class Journal:
    """The current batch, the publishes waiting for it, and those of the commit under way."""

    durable: bool = False
    batch: WriteBatch = field(default_factory=WriteBatch)
    staged: int = 0  # messages published into the current batch
    pending: list[PendingPublish] = field(default_factory=list)  # not committed yet
    inflight: list[PendingPublish] = field(default_factory=list)  # in the commit under way
    # Stored here, waiting for the standby's ack before they are queued and confirmed
    # (a replicated broker, zq.ha), oldest first.
    awaiting: list[PendingPublish] = field(default_factory=list)
    # Credit of acked deliveries, given back once their acks are stored (a durable
    # store): a consumer never holds more unacked or unstored-acked messages than its
    # window, so a crash brings back at most that many acked ones (PROTOCOL.md 12).
    owed: list[Sub] = field(default_factory=list)  # acks in the current batch
    owing: list[Sub] = field(default_factory=list)  # acks in the commit under way
    starved: bool = False  # a consumer has no place left until owed acks are stored

    # ------------------------------------------------------------------ staging

    def publish(self, p: PendingPublish) -> None:
        """A publish that waits for the batch; its messages are stored with it."""
        self.pending.append(p)
        if self.durable and p.bodies:
            self.staged += len(p.bodies)
            s = p.q.stream  # a stream's entries are stored under its key (zq.core.streams)
            self.batch.inserts.append((p.first, p.q.name if s is None else s.key, p.headers,
                                       p.bodies))

    def share(self, first: int, bodies: list[bytes], refs: int) -> None:
        """Bodies that ``refs`` new messages share (a topic's copies), stored once."""
        if self.durable:
            self.batch.shared.append((first, bodies, refs))

    def place(self, first: int, last: int, due_wall: float, opts: bytes | None) -> None:
        """New messages' due time (wall clock) and packed options."""
        if self.durable:
            self.batch.placed.append((first, last, due_wall, opts))

    def dedup(self, queue: str, key: str, mid: int, until_wall: float) -> None:
        if self.durable:
            self.batch.dedups.append((queue, key, mid, until_wall))

    def produced(self, pid: bytes, seq: int, first: int, count: int) -> None:
        """An idempotent producer's PUBLISH ``seq`` got these ids (kept with them)."""
        if self.durable:
            self.batch.produced.append((pid, seq, first, count))

    def trim(self, pid: bytes, below: int) -> None:
        """Forget stored seqs of producer ``pid`` below ``below`` (ALL_SEQS: all)."""
        if self.durable:
            self.batch.trims.append((pid, below))

    def attempts(self, ids: list[int], attempts: list[int], ready_at: float, state: int
                 ) -> None:
        """Attempt numbers of messages (one DELIVER, one release, one stored ahead)."""
        if self.durable:
            self.batch.updates.append((ids, attempts, ready_at, state))

    def rewrite(self, rw: Rewrite) -> None:
        """A message's whole row: a failure recorded, a move to another queue."""
        if self.durable:
            self.batch.updates.append(rw)

    def delete(self, ids: list[int]) -> None:
        if self.durable:
            self.batch.deletes.extend(ids)

    def forget(self, msgs: list[Msg]) -> None:
        """Messages that are done (acked, dead without a dead-letter queue)."""
        if self.durable:
            self.batch.deletes.extend([m.id for m in msgs])

    def settings(self, queue: str, blob: bytes | None) -> None:
        """A queue's settings and paused flag (None: the queue is gone)."""
        if self.durable:
            self.batch.settings.append((queue, blob))

    def purge(self, queue: str, above: int, upto: int) -> None:
        """Delete ``queue``'s stored rows with ids in (above, upto]."""
        if self.durable:
            self.batch.purges.append((queue, above, upto))

    def result(self, mid: int, queue: str, state: str, data: bytes, until_wall: float
               ) -> None:
        if self.durable:
            self.batch.results.append((mid, queue, state, data, until_wall))

    def schedule(self, name: str, spec: bytes | None) -> None:
        """A schedule's state (None: removed)."""
        if self.durable:
            self.batch.schedules.append((name, spec))

    # ------------------------------------------------------------- commit cycle

    def has_work(self) -> bool:
        return bool(self.batch or self.pending)

    def take(self, created_wall: float) -> tuple[WriteBatch, list[PendingPublish]]:
        """The batch and its publishes, for the store; the next batch starts empty."""
        batch, self.batch = self.batch, WriteBatch()
        batch.created = created_wall
        batch.skip_deleted_updates()
        self.staged = 0
        pending, self.pending = self.pending, []
        self.inflight = pending
        self.owing, self.owed = self.owed, []
        self.starved = False
        return batch, pending

    def done(self, stored: bool) -> list[Sub]:
        """The commit under way returned (stored or not): the credit its acks owe (given
        back even if the commit failed: consumers go on being served)."""
        self.inflight = []
        owing, self.owing = self.owing, []
        return owing

    def in_progress(self) -> list[PendingPublish]:
        """Publishes not queued yet: those waiting for the standby, the commit under
        way's, then the current batch's."""
        return self.awaiting + self.inflight + self.pending

    @staticmethod
    def kept(batch: WriteBatch, schedules: list[tuple[str, bytes | None]]) -> WriteBatch:
        """The one rule for a batch that failed: all but its new messages (refused),
        with the schedules it touched as they are now (``schedules``: a schedule whose
        message was refused has been wound back)."""
        return WriteBatch(updates=batch.updates, deletes=batch.deletes, settings=batch.settings,
                          purges=batch.purges, results=batch.results, schedules=schedules,
                          trims=batch.trims)

    def restage(self, kept: WriteBatch) -> None:
        """What was kept and could not be stored on its own goes ahead of what was
        staged since, compacted, so a store that fails for long does not grow it."""
        b = self.batch
        b.updates[:0] = kept.updates  # older than anything staged since
        b.deletes[:0] = kept.deletes
        b.settings[:0] = kept.settings
        b.purges[:0] = kept.purges
        b.results[:0] = kept.results
        b.schedules.extend(kept.schedules)
        b.trims[:0] = kept.trims
        b.compact()

