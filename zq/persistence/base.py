"""The storage interface every store implements.

The broker collects everything it must persist during one pass of its loop in
one :class:`WriteBatch` and hands it to :meth:`Store.commit`. Publisher
confirms are sent only after ``commit`` returns; if it raises, nothing of the
batch counts as stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from zq.schedules import Schedule


# What a row's attempt count means (the ``state`` column), so that recovery counts
# only attempts that were made:
WAITING = 0  # ready or delayed: ``attempts`` deliveries were made
DELIVERED = 1  # delivery number ``attempts`` was stored before its DELIVER went out
AHEAD = 2  # ``attempts`` is the next delivery's number, stored ahead (older brokers wrote it)


@dataclass(slots=True)
class StoredMessage:
    """A message as the store keeps it."""

    id: int
    queue: str
    body: bytes
    headers: dict[str, Any] | None
    attempts: int  # deliveries so far
    ready_at: float  # wall-clock seconds; 0 = ready now
    created: float = 0.0  # wall-clock seconds it was published (0: unknown)
    opts: dict[str, Any] | None = None  # its publish options (see ``zq.core.pack_opts``)
    state: int = WAITING  # WAITING, DELIVERED or AHEAD


class SharedBodies(list[bytes]):
    """The bodies of one copy of a topic's publish (zq.core.topics): the same bodies as
    the other copies', stored once, in ``bodies`` rows ``ref``, ``ref + 1``, ...
    (``WriteBatch.shared``). A store that keeps them apart (the memory store, a
    standby fed by the replication stream) may treat it as a plain list."""

    ref: int = 0

    def __init__(self, bodies: list[bytes], ref: int) -> None:
        super().__init__(bodies)
        self.ref = ref


# One PUBLISH frame's messages: first id (the rest follow), queue, headers (None
# when no message has any, else one entry per body), bodies (SharedBodies: a copy).
Insert = tuple[int, str, "list[dict[str, Any] | None] | None", "list[bytes]"]
# Bodies several messages share: first body id (the rest follow), bodies, how many
# messages refer to each.
Shared = tuple[int, "list[bytes]", int]
# Ids and their new attempt counts, and the due time (wall clock, 0 = now) and the
# state (WAITING, DELIVERED, AHEAD) they share.
Update = tuple["list[int]", "list[int]", float, int]


@dataclass(slots=True)
class Rewrite:
    """One message's whole state, for the rarer changes: a failure recorded in its
    headers, a move to another queue (dead letters, redrive). Ordered among updates.
    Its state is WAITING: a rewritten message is not in flight."""

    id: int
    queue: str
    attempts: int
    ready_at: float
    headers: dict[str, Any] | None
    opts: bytes | None


# A run of new messages' options: first id, last id, due time (wall), packed options.
Placed = tuple[int, int, float, "bytes | None"]
# A remembered dedup id: queue, dedup id, message id, forget after (wall clock).
Dedup = tuple[str, str, int, float]
# A PUBLISH frame of an idempotent producer: producer id, seq, first id, count.
Produced = tuple[bytes, int, int, int]
# Forget a producer's stored seqs below a floor (ALL_SEQS: all of them).
ALL_SEQS = 1 << 63


@dataclass(slots=True)
class WriteBatch:
    """Everything to persist from one pass of the broker loop (one transaction).

    Entries are staged per frame, not per message, so staging costs the
    broker's loop nothing per message. ``updates`` apply in order (a later entry
    for an id wins); ``deletes`` apply last.
    """

    inserts: list[Insert] = field(default_factory=list)  # new messages, attempts 0
    shared: list[Shared] = field(default_factory=list)  # bodies that inserts share
    placed: list[Placed] = field(default_factory=list)  # options of new messages that have any
    updates: list[Update | Rewrite] = field(default_factory=list)  # applied in order
    deletes: list[int] = field(default_factory=list)  # acked or dead
    settings: list[tuple[str, bytes | None]] = field(default_factory=list)  # None: queue deleted
    # (queue, above id, up to id): delete that queue's rows in the range
    purges: list[tuple[str, int, int]] = field(default_factory=list)
    dedups: list[Dedup] = field(default_factory=list)
    # (id, queue, state, packed data, forget after (wall)): what became of messages
    results: list[tuple[int, str, str, bytes, float]] = field(default_factory=list)
    schedules: list[tuple[str, bytes | None]] = field(default_factory=list)  # None: removed
    produced: list[Produced] = field(default_factory=list)  # with the inserts they name
    trims: list[tuple[bytes, int]] = field(default_factory=list)  # (producer, below seq)
    created: float = 0.0  # wall-clock time of this batch's new messages
    # (term, seq): the batch's place in a replicated broker's stream (zq.ha), stored
    # in the same transaction, so that a restarted replica knows where it stands.
    position: tuple[int, int] | None = None

    def __bool__(self) -> bool:
        return bool(self.inserts or self.deletes or self.updates or self.settings
                    or self.purges or self.dedups or self.results or self.schedules
                    or self.trims)

    def pieces(self, n: int = 64) -> list[WriteBatch]:
        """This batch, without new messages, as small transactions in the order one
        transaction would apply it (updates, then queue changes, then deletes), each
        of at most ``n`` entries: on a nearly full disk, where the write-ahead log has
        no room for one big transaction, they commit one after another."""
        units: list[Update | Rewrite] = []
        for u in self.updates:
            if type(u) is Rewrite:
                units.append(u)
            else:
                ids, attempts, ready_at, state = u  # type: ignore[misc]
                units += [(ids[i:i + n], attempts[i:i + n], ready_at, state)
                          for i in range(0, len(ids), n)]
        out = [WriteBatch(updates=units[i:i + n]) for i in range(0, len(units), n)]
        changes = WriteBatch(settings=self.settings, purges=self.purges, results=self.results,
                             schedules=self.schedules, trims=self.trims)
        if changes:
            out.append(changes)
        out += [WriteBatch(deletes=self.deletes[i:i + n])
                for i in range(0, len(self.deletes), n)]
        return out

    @staticmethod
    def joined(batches: list[WriteBatch]) -> WriteBatch:
        """One batch holding ``batches`` (without new messages), in order."""
        out = WriteBatch()
        for b in batches:
            out.updates += b.updates
            out.deletes += b.deletes
            out.settings += b.settings
            out.purges += b.purges
            out.results += b.results
            out.schedules += b.schedules
            out.trims += b.trims
        return out

    def skip_deleted_updates(self) -> None:
        """Leave out the attempt updates of messages this batch also deletes: deletes
        apply last, so they would write rows that go in the same transaction (under
        load an ack usually comes within the batch that holds its delivery's update)."""
        if not self.deletes or not self.updates:
            return
        gone = set(self.deletes)
        kept: list[Update | Rewrite] = []
        for u in self.updates:
            if type(u) is Rewrite:
                kept.append(u)
                continue
            ids, attempts, ready_at, state = u  # type: ignore[misc]
            if gone.isdisjoint(ids):
                kept.append(u)
            elif not gone.issuperset(ids):
                left = [k for k, i in enumerate(ids) if i not in gone]
                kept.append(([ids[k] for k in left], [attempts[k] for k in left],
                             ready_at, state))
        self.updates = kept

    def compact(self) -> None:
        """Keep only the last word on each message, queue and outcome.

        A batch that fails to commit is carried into the next one; on a disk that
        stays full that would grow by every delivery and ack until it could never
        commit. Compacted, it holds at most one entry per message (its latest
        rewrite and the attempt update after it), one per queue and one per result.
        """
        gone = set(self.deletes)
        rewrites: dict[int, Rewrite] = {}
        after: dict[int, tuple[int, float, int]] = {}  # id -> attempts, ready_at, state
        for u in self.updates:
            if type(u) is Rewrite:
                rewrites[u.id] = u
                after.pop(u.id, None)
            else:
                ids, attempts, ready_at, state = u  # type: ignore[misc]
                for i, a in zip(ids, attempts, strict=True):
                    after[i] = (a, ready_at, state)
        updates: list[Update | Rewrite] = [r for i, r in rewrites.items() if i not in gone]
        updates += [([i], [a], ready_at, state) for i, (a, ready_at, state) in after.items()
                    if i not in gone]
        self.updates = updates
        self.deletes = list(dict.fromkeys(self.deletes))
        self.settings = list({name: blob for name, blob in self.settings}.items())
        self.results = list({r[0]: r for r in self.results}.values())
        floors: dict[bytes, int] = {}
        for pid, below in self.trims:
            floors[pid] = max(floors.get(pid, 0), below)
        self.trims = list(floors.items())


@dataclass(slots=True)
class Recovered:
    """What a store holds at start.

    ``messages`` are the first stored messages of each queue, in id order, at
    most the ``window`` asked for; ``backlog`` counts, per queue, the ones left
    on disk, to be paged in with :meth:`Store.load`.
    """

    messages: list[StoredMessage]
    next_id: int
    backlog: dict[str, int] = field(default_factory=dict)
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # queue -> its state
    dedups: list[Dedup] = field(default_factory=list)
    results: list[tuple[int, str, str, dict[str, Any], float]] = field(default_factory=list)
    schedules: list[Schedule] = field(default_factory=list)
    # Streams (zq.core.streams), by their key: (entries, first id, last id, bytes of
    # bodies, wall clock the first was stored).
    streams: dict[str, tuple[int, int, int, int, float]] = field(default_factory=dict)
    # Idempotent producers: (producer id, last stored (wall), [(seq, first, count), ...]).
    producers: list[tuple[bytes, float, list[tuple[int, int, int]]]] = field(
        default_factory=list)


class Store(Protocol):
    """One writer; all methods are called from the broker's event loop."""

    durable: bool
    full: bool  # no room: publishes are refused without trying; settlements still commit

    async def open(self, window: int) -> Recovered:
        """Open (creating if needed) and return what is stored, ``window`` per queue."""
        ...

    async def commit(self, batch: WriteBatch) -> None:
        """Persist ``batch`` atomically; raise StorageFull or StorageError on failure."""
        ...

    def commit_now(self, batch: WriteBatch) -> bool:
        """Persist ``batch`` without awaiting, if the store can do that cheaply (a small
        batch); False if it did not (nothing of it is stored): :meth:`commit` then."""
        ...

    async def load(self, queue: str, after_id: int, limit: int) -> list[StoredMessage]:
        """Up to ``limit`` stored messages of ``queue`` with ids above ``after_id``."""
        ...

    async def seek(self, group: str, start: tuple[Any, ...]) -> tuple[int, int]:
        """Where a stream's group starts: the first entry at or after ``start``
        (("offset", id) or ("time", wall)), 0 if none, and how many from there on."""
        ...

    async def trim_point(self, key: str, floor: int, cutoff: float, excess: int, most: int
                         ) -> tuple[int, int, int, int, float]:
        """How far a stream's retention goes: (up to id, count, bytes, first id left,
        its time)."""
        ...

    async def maintain(self) -> None:
        """Periodic upkeep (for SQLite: checkpoint the WAL); called about once a second."""
        ...

    def stats(self) -> dict[str, Any]:
        """Counters for STATS replies (at least ``kind``)."""
        ...

    async def close(self) -> None:
        """Flush and release resources."""
        ...
