"""The commit cycle: what waits for the store, and what a failed commit refuses,
retries and answers. No I/O.
"""

from __future__ import annotations

import itertools

from zq.core.intake import Intake
from zq.core.model import Queue
from zq.core.state import (  # noqa: F401
    _FATAL,
    DEAD_AT,
    HISTORY,
    MAX_HEARTBEAT,
    ORIGIN,
    PRESTORE_LEAD,
    REASON,
    STATS_SHOWN,
    Commit,
    CoreState,
    Extra,
    Outgoing,
    Pending,
    _packb,
    _with_ref,
    log,
    pack_opts,
    unpack_opts,
)
from zq.errors import (
    ZqError,
)
from zq.persistence.base import (
    WriteBatch,
)
from zq.protocol import codec
from zq.protocol import frames as f


class Commits(Intake):
    """Batches on their way to the store, and the frames that wait for them."""

    def take_batch(self) -> WriteBatch:
        batch, self._batch = self._batch, WriteBatch()
        batch.created = self.now + self.wall_offset
        self.staged = 0
        return batch

    def take_commit(self) -> Commit:
        """Everything that waits for the store: the batch, and what to do once it is stored."""
        c = Commit(self.take_batch(), self._pending, self.unstored_out)
        self._inflight = self._pending
        self._prestaging, self._prestaged = self._prestaged, []
        self._pending, self.unstored_out = [], []
        return c

    def first_unstored(self, q: Queue) -> int:
        """The lowest id published to ``q`` whose commit has not completed (else next_id).

        Purges and deletes must spare those rows: they enter the queue after the
        operation, once their commit returns.
        """
        firsts = [p[3] for p in itertools.chain(self._inflight, self._pending)
                  if p[1] is q and p[4]]
        return min(firsts, default=self.next_id)

    def release(self, deliveries: list[Outgoing]) -> None:
        """Send frames whose commit returned, unless their session ended meanwhile.

        A session dropped while the commit ran has had its messages requeued, and
        a new session of the same client must not get the old session's frames.
        """
        peers = self.peers
        for d in deliveries:
            peer = peers.get(d[0])
            if peer is None:
                continue
            msgs = d[2]
            held = peer.held
            # Usually the first tells (a new session holds none of them); a time limit
            # that ran out during the commit may have taken some of a frame, not all.
            if not msgs or held.get(msgs[0].id) is msgs[0] or any(
                    held.get(m.id) is m for m in msgs):
                self.out.append(d)

    def has_unstored(self) -> bool:
        """Whether anything waits for a commit."""
        return bool(self._batch or self._pending or self.unstored_out)

    def restage(self, batch: WriteBatch) -> None:
        """What failed to commit, except new messages, goes into the next batch
        (compacted, so that a store failing for long does not grow it without end)."""
        b = self._batch
        b.updates[:0] = batch.updates  # older than anything staged since
        b.deletes.extend(batch.deletes)
        b.settings[:0] = batch.settings
        b.purges[:0] = batch.purges
        b.results[:0] = batch.results
        b.schedules.extend(self._schedule_states(batch.schedules))
        b.compact()

    def settlements_of(self, batch: WriteBatch) -> WriteBatch:
        """What of a batch that failed may be stored without its new messages:
        settlements, attempt numbers, history, queue changes, results, and the
        schedules it touched as they are now."""
        rest = batch.without_inserts()
        rest.schedules = self._schedule_states(batch.schedules)
        return rest

    def _schedule_states(self, staged: list[tuple[str, bytes | None]]
                         ) -> list[tuple[str, bytes | None]]:
        """Current state of the schedules named in ``staged`` (one whose message was
        refused has been wound back, so what was staged for it is stale)."""
        out: list[tuple[str, bytes | None]] = []
        for name in dict.fromkeys(n for n, _ in staged):
            sched = self.schedules.get(name)
            out.append((name, None if sched is None else _packb(sched.to_map())))
        return out

    def fail_replies(self, deliveries: list[Outgoing], exc: ZqError) -> list[Outgoing]:
        """Answer the replies among ``deliveries`` (they waited for a commit that
        failed) with ``exc`` now; return the DELIVER frames, which go out anyway, and
        the replies to reading operations."""
        keep: list[Outgoing] = []
        for d in deliveries:
            if d[2] is not None:
                keep.append(d)
                continue
            if d[0] not in self.peers:
                continue
            reply = codec.decode(d[1])
            op = f.STATS if isinstance(reply, f.StatsReply) else f.MANAGE
            self._fail(d[0], type(exc)(
                f"not stored: {exc.message}; what the request changed stays in effect in "
                f"the broker and is stored by a later commit", **exc.attrs), op,
                getattr(reply, "req", None))
        return keep

    def commit_failed(self, exc: ZqError, pending: list[Pending] | None = None) -> None:
        """A batch was not stored: refuse its publishes, store nothing."""
        if pending is None:
            pending, self._pending = self._pending, []
        self._inflight = []
        for m in self._prestaging:
            if m.pre_pending:
                m.pre_pending = False  # not stored: it goes the ordinary way
        self._prestaging = []
        for peer, q, seq, first, bodies, _h, extra in pending:
            q.staged -= len(bodies)
            if bodies and extra is not None and extra[0].dedup_id is not None:
                key = (q.name, extra[0].dedup_id)
                if self._dedup.get(key, (0, 0.0))[0] == first:
                    del self._dedup[key]
            if peer is None:  # a schedule's message: that due time fires again
                self._unfire(first)
                continue
            self._fail(peer.identity, exc, f.PUBLISH, seq)

    def _unfire(self, mid: int) -> None:
        """A schedule's message was not stored: its due time comes round again."""
        name, due = self._fired_due.pop(mid, ("", 0.0))
        s = self.schedules.get(name)
        if s is not None:
            s.next_due = min(s.next_due, due)
            s.fired -= 1
