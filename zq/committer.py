"""The broker's side of the commit cycle: when a batch goes to the store, on which
thread, and what a failed commit refuses, retries and answers.

The core (``zq.core``) stages what must be stored and says what waits for it; this
shell takes the batch when it is due, commits a small one in the pass that took it
(SqliteStore.commit_now: no thread hop) and a bigger one in a task, at most one at a
time, then releases confirms and replies, pages backlogs in and does the store's
upkeep while the connection is free. DESIGN.md, "The loop" and "Settlements wait".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

from zq.core.facade import Core
from zq.core.histogram import SIZE_BOUNDS, Histogram
from zq.core.state import Commit
from zq.core.streams import TRIM_ROWS
from zq.errors import StorageError, StorageFull, ZqError
from zq.logs import Throttle
from zq.persistence import Store, WriteBatch

log = logging.getLogger("zq.broker")
SETTLE_DELAY = 0.02  # seconds settlements staged alone may wait for a commit to share


class Replicator(Protocol):
    """A replicated broker's standby link (zq.ha.primary): every batch this broker
    commits is numbered before and shipped after, and what waits for a batch (its
    confirms, replies and deliveries) waits for the standby's ack too."""

    def prepare(self, batch: WriteBatch) -> None:
        """Number ``batch`` (its ``position``) before it is committed here."""

    def shipped(self, batch: WriteBatch) -> None:
        """``batch`` is committed here: send it to the standby."""

    def hold(self, confirm: Callable[[ZqError | None], None], send: Callable[[], None]
             ) -> None:
        """Once the standby has every batch shipped so far (at once when this broker
        confirms alone): ``confirm(None)``, then ``send()``, while this broker is
        primary. ``confirm(error)`` instead if it cannot confirm (its lease is not
        confirmed, or the standby was lost and ``--ha-strict``); ``send`` waits for
        the lease."""

    def refusal(self) -> ZqError | None:
        """The error new publishes are refused with now (None: they are taken)."""

    def holds(self) -> bool:
        """Whether this broker is the primary now (it may deliver and confirm)."""

    @property
    def idle(self) -> bool:
        """Nothing waits for the standby."""


class Committer:
    """One broker's commits. ``wake`` asks the loop for a pass (a commit returned)."""

    def __init__(self, core: Core, store: Store, wake: Callable[[], None],
                 replicator: Replicator | None = None) -> None:
        self.core = core
        self.store = store
        self._wake = wake
        self.replicator = replicator
        self.running: asyncio.Task[None] | None = None  # the commit task, if one runs
        self.next_maintain = 0.0  # monotonic: the store's next upkeep
        self.count = 0  # commits completed (what ``stored`` waits for)
        self._done = asyncio.Event()
        self._settle_since: float | None = None  # settlements staged alone since then
        self._storage_error: ZqError | None = None
        # For the admin listener: how long the store takes to commit a batch, and how
        # many new messages each batch carries (group commit at work).
        # Store failures that repeat every pass: said a few times a second, then summed.
        self._store_log = Throttle(log, "storage_error", "%d more store error(s): %s",
                                   per_second=2)
        self.commit_seconds = Histogram()
        self.commit_messages = Histogram(SIZE_BOUNDS)

    def _observe(self, c: Commit, began: float) -> None:
        self.commit_seconds.observe(time.monotonic() - began)
        self.commit_messages.observe(sum(len(p.bodies) for p in c.pending))

    def start(self, loop: asyncio.AbstractEventLoop, now: float) -> None:
        """In a pass, once the frames are in: store what is due, here if it is small
        (its confirms and deliveries then go out in this pass), else in a task."""
        if self.running is None and self.due(now):
            self._settle_since = None
            c = self.core.take_commit()
            if not self.commit_now(c):
                self.running = loop.create_task(self.commit(c))

    def start_upkeep(self, loop: asyncio.AbstractEventLoop, now: float) -> None:
        """Page backlogs in, or do the store's upkeep, if due and the store is free."""
        core = self.core
        if self.running is None and (core.wants_pages() or core.wants_trims()
                                     or now >= self.next_maintain):
            self.running = loop.create_task(self.commit(core.take_commit()))

    def wake_at(self) -> float:
        """When a pass must run for this side: upkeep, or settlements that waited."""
        if self._settle_since is None:
            return self.next_maintain
        return min(self.next_maintain, self._settle_since + SETTLE_DELAY)

    async def close(self) -> None:
        """Cancel a commit still running (only when serving ended by an error)."""
        task, self.running = self.running, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):  # serving ended on another error
                await task

    def due(self, now: float) -> bool:
        """Whether what is staged goes to the store now. Settlements alone (acks, the
        attempt numbers of deliveries) wait up to SETTLE_DELAY for a publish, a reply
        or a consumer waiting for its window, to share that commit's fsync: a crash
        meanwhile loses no confirmed message and brings back at most a consumer's
        window of acked ones, as any crash before an ack's commit does."""
        core = self.core
        if not core.has_unstored():
            return False
        if core.commit_urgent():
            return True
        if self._settle_since is None:
            self._settle_since = now
        return now - self._settle_since >= SETTLE_DELAY

    def commit_now(self, c: Commit) -> bool:
        """Store a small batch in this pass, on the loop's thread (see
        SqliteStore.commit_now), so that the confirms and deliveries it releases go
        out in this pass's flush. False: it goes to a commit task the usual way."""
        repl = self.replicator
        if c.batch:
            if repl is not None:
                if c.batch.inserts and repl.refusal() is not None:
                    return False  # refused in a commit task, with the rest stored
                repl.prepare(c.batch)
            began = time.monotonic()
            if not self.store.commit_now(c.batch):
                return False
            self._observe(c, began)
            if repl is not None:
                repl.shipped(c.batch)
            if self._storage_error is not None and not self.store.full:
                log.warning("storage works again after: %s", self._storage_error,
                            extra={"event": "storage_recovered"})
                self._storage_error = None
        self._settle(c, stored=True)
        self.count += 1
        self._done.set()
        return True

    async def commit(self, c: Commit) -> None:
        """Store one batch (group commit), then confirm, queue and send what waited for it.

        If the batch cannot be stored, its publishes are refused and the rest is
        tried on its own (see :meth:`_store_failed`); deliveries go out anyway, so
        consumers keep being served.
        """
        core = self.core
        try:
            refusal = self._refusal() if c.batch.inserts else None
            if not c.batch:
                self._settle(c, stored=True)
            elif refusal is not None:
                # No room on the disk, or no standby: refuse without trying, commit the
                # settlements.
                await self._store_failed(c, refusal, storage=isinstance(refusal, StorageFull))
                self._settle(c, stored=False)
            else:
                try:
                    began = time.monotonic()
                    await self._store_commit(c.batch)
                    self._observe(c, began)
                except ZqError as exc:
                    await self._store_failed(c, exc)
                    self._settle(c, stored=False)
                else:
                    if self._storage_error is not None and not self.store.full:
                        log.warning("storage works again after: %s", self._storage_error,
                            extra={"event": "storage_recovered"})
                        self._storage_error = None
                    self._settle(c, stored=True)
            # The store's connection is free now: page backlogs in and do upkeep.
            now = time.monotonic()
            if not core.stopping:
                await self._page_in(now)
            if core.wants_trims() and not core.stopping:
                await self._retention(sizes=True)  # a stream past its max_bytes
            if now >= self.next_maintain:
                self.next_maintain = now + 1.0
                await self.store.maintain()
                if core.streams and not core.stopping:
                    await self._retention()
        finally:
            self.running = None
            self.count += 1
            self._done.set()
            self._wake()

    def _refusal(self) -> ZqError | None:
        if self.store.full:
            return StorageFull("the disk is full: publishes are refused until acks free space")
        return None if self.replicator is None else self.replicator.refusal()

    def _settle(self, c: Commit, stored: bool) -> None:
        """``c``'s batch was stored (or refused, its publishes answered): queue and
        confirm its publishes and send the frames that waited for it; on a replicated
        broker, once the standby has it too."""
        core = self.core
        core.now = max(core.now, time.monotonic())  # a commit task took time: confirm at now
        repl = self.replicator
        if repl is None:
            if stored:
                core.committed(c.pending)
            core.release(c.deliveries)
            return
        pending = c.pending if stored else []
        deliveries = c.deliveries
        if stored:
            core.stored_awaiting(pending)
        if not pending and not deliveries:
            return  # nothing waits for this batch
        def confirm(error: ZqError | None) -> None:
            core.replicated(pending, error)

        def send() -> None:
            core.release(deliveries)

        repl.hold(confirm, send)

    async def stored(self) -> None:
        """Return once everything staged before the call is stored (a commit that began
        after it has returned); on a replicated broker, on the standby too (raises
        what the replicator answers instead: UNAVAILABLE while fenced, or strict
        without a standby)."""
        if not self.store.durable:
            return
        target = self.count + (2 if self.running is not None else 1)
        self._wake()
        while self.count < target:
            self._done.clear()
            await self._done.wait()
        repl = self.replicator
        if repl is not None:
            answer: asyncio.Future[ZqError | None] = asyncio.get_running_loop().create_future()

            def confirm(error: ZqError | None) -> None:
                if not answer.done():
                    answer.set_result(error)

            repl.hold(confirm, lambda: None)
            error = await answer
            if error is not None:
                raise error

    async def _store_failed(self, c: Commit, exc: ZqError, storage: bool = True) -> None:
        """A batch was not stored: the core refuses its publishes and keeps the rest
        (acks, attempt numbers, history, queue changes: what frees space on a full
        disk), which is tried at once on its own, in small transactions if the disk
        has no room for a big one. What still fails goes with the next batch, and the
        replies that waited for it are answered with the error: no request hangs on a
        store that cannot write."""
        core = self.core
        if storage:  # (not a replicated broker's refusal: its link logs why)
            self._storage_failed(exc)
        rest = core.refuse(c, exc)
        if not rest:
            return
        try:
            await self._store_commit(rest)
        except ZqError as again:
            left = await self._store_pieces(rest) if isinstance(again, StorageFull) else rest
            if left is not None:
                self._storage_failed(again)
                c.deliveries = core.carry(left, again, c.deliveries)

    async def _store_pieces(self, rest: WriteBatch) -> WriteBatch | None:
        """Commit ``rest`` as small transactions (a full disk may have room for a small
        write-ahead log, not a big one); return what could not be stored, or None."""
        pieces = rest.pieces()
        for i, piece in enumerate(pieces):
            try:
                await self._store_commit(piece)
            except ZqError:
                return WriteBatch.joined(pieces[i:])
        return None

    async def _store_commit(self, batch: WriteBatch) -> None:
        """``store.commit``, with anything unexpected turned into STORAGE_ERROR, so that
        a store bug still answers every publish of the batch instead of leaving it hanging."""
        repl = self.replicator
        try:
            if repl is not None:
                repl.prepare(batch)
            await self.store.commit(batch)
            if repl is not None:
                repl.shipped(batch)
        except (ZqError, asyncio.CancelledError):
            raise
        except Exception as exc:
            self._store_log.say("store commit raised: %r", exc, reason=repr(exc)[:200],
                                exc_info=True)
            raise StorageError(f"unexpected store failure: {exc!r}") from None

    def _storage_failed(self, exc: ZqError) -> None:
        if self._storage_error is None or self._storage_error.name != exc.name:
            log.error("commit failed, publishes are refused until it works: %s", exc,
                      extra={"event": "storage_failed", "code": exc.name, "reason": str(exc)})
        self._storage_error = exc

    async def _retention(self, sizes: bool = False) -> None:
        """Streams past their max_age or max_bytes: the oldest entries' purge is staged
        (zq.core.streams), at most TRIM_ROWS per stream at a time; those past their
        max_bytes as soon as they are (``sizes``), ages once a second."""
        core = self.core
        for key, floor, cutoff, excess in core.wanted_trims(time.time(), sizes):
            try:
                found = await self.store.trim_point(key, floor, cutoff, excess, TRIM_ROWS)
            except ZqError as exc:
                self._store_log.say("cannot apply a stream's retention: %s", exc,
                                    reason=str(exc), kind=exc.name, level=logging.ERROR)
                continue
            core.trimmed(key, *found)

    async def _page_in(self, now: float) -> None:
        """Read the next part of each draining queue's on-disk backlog."""
        core = self.core
        for key, start in core.wanted_seeks():  # where a stream's group starts
            try:
                first, count = await self.store.seek(key, start)
            except ZqError as exc:
                self._store_log.say("cannot look up where a stream's group starts: %s", exc,
                                    reason=str(exc), kind=exc.name, level=logging.ERROR)
                continue
            core.sought(key, first, count)
        for queue, after, limit in core.wanted_pages():
            try:
                stored = await self.store.load(queue, after, limit)
            except ZqError as exc:
                self._store_log.say("cannot read the backlog of %s: %s", queue, exc,
                                    reason=str(exc), kind=exc.name, level=logging.ERROR,
                                    queue=queue)
                continue
            core.paged_in(queue, limit, stored, now)
