"""The commit cycle: what waits for the store, and what a failed commit refuses,
retries and answers. No I/O.
"""

from __future__ import annotations

from zq.core.journal import Journal, PendingPublish
from zq.core.model import Queue
from zq.core.outbox import Outgoing
from zq.core.state import (
    Commit,
    _packb,
)
from zq.core.streams import Streams
from zq.errors import (
    ZqError,
)
from zq.persistence.base import (
    WriteBatch,
)
from zq.protocol import frames as f


class Commits(Streams):
    """Batches on their way to the store, and the frames that wait for them."""

    def take_batch(self) -> WriteBatch:
        """The current batch alone (its publishes stay pending: tests and tools)."""
        batch, self.journal.batch = self.journal.batch, WriteBatch()
        batch.created = self.now + self.wall_offset
        self.journal.staged = 0
        return batch

    def take_commit(self) -> Commit:
        """Everything that waits for the store: the batch, and what to do once it is stored."""
        if self.streams:
            self.stage_groups()
        batch, pending = self.journal.take(self.now + self.wall_offset)
        return Commit(batch, pending, self.outbox.take_unstored())

    def first_unstored(self, q: Queue) -> int:
        """The lowest id published to ``q`` whose commit has not completed (else next_id).

        Purges and deletes must spare those rows: they enter the queue after the
        operation, once their commit returns.
        """
        firsts = [p.first for p in self.journal.in_progress() if p.q is q and p.bodies]
        return min(firsts, default=self.next_id)

    def release(self, deliveries: list[Outgoing]) -> None:
        """Send frames whose commit returned, unless their session ended meanwhile."""
        self.outbox.release(self.peers, deliveries)

    def commit_urgent(self) -> bool:
        """Whether the batch must be stored now: it holds publishes or changes that a
        reply waits for, or a consumer waits for acks to be stored to get more (or
        the broker is stopping). Acks and attempt numbers alone may wait."""
        j = self.journal
        b = j.batch
        return bool(j.pending or self.outbox.unstored or j.starved or self.stopping
                    or b.settings or b.purges or b.dedups or b.results or b.schedules
                    or b.trims)

    def has_unstored(self) -> bool:
        """Whether anything waits for a commit."""
        return self.journal.has_work() or bool(self.outbox.unstored)

    def refuse(self, c: Commit, exc: ZqError) -> WriteBatch:
        """``c``'s batch was not stored: its publishes are refused with ``exc``, and
        what is kept (the journal's rule) is returned, to be stored on its own."""
        self.commit_failed(exc, c.pending)
        return Journal.kept(c.batch, self._schedule_states(c.batch.schedules))

    def carry(self, kept: WriteBatch, exc: ZqError, deliveries: list[Outgoing]
              ) -> list[Outgoing]:
        """What was kept could not be stored either: it goes with the next batch, and
        the replies that waited for it get ``exc`` now (see Outbox.fail_replies).
        Returns the frames that still go out."""
        self.journal.restage(kept)
        return self.outbox.fail_replies(self.peers, deliveries, exc)

    def restage(self, kept: WriteBatch) -> None:
        """What was kept of a failed batch goes into the next one (compacted)."""
        self.journal.restage(kept)

    def _schedule_states(self, staged: list[tuple[str, bytes | None]]
                         ) -> list[tuple[str, bytes | None]]:
        """Current state of the schedules named in ``staged`` (one whose message was
        refused has been wound back, so what was staged for it is stale)."""
        out: list[tuple[str, bytes | None]] = []
        for name in dict.fromkeys(n for n, _ in staged):
            sched = self.schedules.get(name)
            out.append((name, None if sched is None else _packb(sched.to_map())))
        return out

    def commit_failed(self, exc: ZqError, pending: list[PendingPublish] | None = None
                      ) -> None:
        """A batch was not stored: refuse its publishes, store nothing."""
        if pending is None:
            pending, self.journal.pending = self.journal.pending, []
        self.repay(self.journal.done(stored=False))
        for p in pending:
            q = p.q
            q.staged -= len(p.bodies)
            if p.bodies and p.extra is not None and p.extra[0].dedup_id is not None:
                key = (q.name, p.extra[0].dedup_id)
                if self._dedup.get(key, (0, 0.0))[0] == p.first:
                    del self._dedup[key]
            if p.bodies and p.peer is not None and p.peer.producer:
                self.producers.drop(p.peer.producer, p.seq, p.first)
            if p.src:  # moved here: the source sends it again
                inc = q.incoming
                if inc is not None and inc.seen.get(p.src) == p.first:
                    del inc.seen[p.src]
                continue
            if p.peer is None:  # a schedule's message: that due time fires again
                self._unfire(p.first)
                continue
            self._fail(p.peer.identity, exc, f.PUBLISH, p.seq)

    def _unfire(self, mid: int) -> None:
        """A schedule's message was not stored: its due time comes round again."""
        name, due = self._fired_due.pop(mid, ("", 0.0))
        s = self.schedules.get(name)
        if s is not None:
            s.next_due = min(s.next_due, due)
            s.fired -= 1
