"""The connections of one :class:`zq.Client` (PROTOCOL.md sections 11.4 and 17).

* The **main** connection goes to the first of the client's endpoints that
  answers (routers and/or brokers). Requests and publishes go there, unless a
  MOVED named another broker for the queue.
* **Failover**: when the main connection gives its node up and the client has
  other endpoints, its unanswered PUBLISH frames go, with the same seqs, to a
  new main connection on the next endpoint that answers; the producer id is the
  client's, so a node that sees a frame twice confirms it once. Its consumers
  move too. So do its unanswered requests that are safe to send twice
  (:data:`MOVABLE`); the others fail with ConnectionLost.
* **MOVED**: a PUBLISH answered MOVED goes, with its seq, to the broker named
  (a side connection from :class:`~zq.client.pool.Pool`), and the queue's
  later publishes go there straight (:class:`~zq.client.routing.Routes`); at
  most :data:`~zq.client.routing.MAX_HOPS` in a row. When that broker is lost,
  its unanswered publishes go, with their seqs, to where the queue is now (the
  router, or the broker LOCATE names). A consumer whose CREDIT is answered
  MOVED moves to that broker.
* **Consumers** of a client whose main node is a router are placed with
  LOCATE on the broker that holds their queue; when that broker is lost they
  LOCATE again every heartbeat until it, or a new owner, answers.

The parts: :mod:`zq.client.conns` (the connections and what they share),
:mod:`zq.client.failover` (what moves when a node is lost or a queue MOVED),
:mod:`zq.client.placement` (consumers). All connections of a client share one
seq counter (:class:`~zq.client.outbox.Seqs`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from zq.client import routing
from zq.client.connection import Connection
from zq.client.failover import Failover
from zq.client.placement import Placement
from zq.client.requests import RESENDABLE
from zq.errors import ConnectionLost, InvalidArgument, Moved
from zq.protocol.names import manage_target

__all__ = ["MOVABLE", "Nodes"]

T = TypeVar("T")

# MANAGE operations that go to the next node when the one they were sent to is lost
# before it answers: those that change nothing, or that have the same effect when
# done twice (the rule for resending after SESSION_UNKNOWN, PROTOCOL.md section 7).
# STATS and LOCATE move too. The others (purge, delete, redrive, complete,
# schedule_rm, cluster_config) may have taken effect: they fail with ConnectionLost.
MOVABLE = RESENDABLE
MAX_MOVES = 3  # lost nodes a request follows in a row before ConnectionLost is the answer


class Nodes(Failover, Placement):
    """The main connection, the side connections and what moves between them."""

    async def connect(self) -> None:
        if self.main is None:
            self.main = await self._connect_any(list(self.endpoints), self.connect_timeout)

    async def window(self, conn: Connection, n: int, queue: str) -> Connection:
        """Wait until ``n`` more messages fit the publish window of the connection
        for ``queue``; that connection (another one after a failover, or when a
        side connection lost its node)."""
        while True:
            try:
                await conn.wait_window(n)
            except ConnectionLost:
                if conn is self.main and self._switch is None:
                    raise
            if conn is self.main and conn.broken is None and not self.routed:
                return conn
            nxt = await self.conn_for(queue)
            if nxt is conn:
                return conn
            conn = nxt

    # ------------------------------------------------------------ requests

    async def manage(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """MANAGE ``op`` where the queue it names lives (the main node without one).

        One refused with MOVED goes to the broker named, three hops at most. One
        whose node is lost before it answers goes again to where its queue is now
        (after a failover, the new main node) if ``op`` is in :data:`MOVABLE`, at
        most :data:`MAX_MOVES` times; otherwise it raises ConnectionLost.
        """
        q = manage_target(op, args)  # where what it acts on lives
        conn = await self._for(q)
        hops = moves = 0
        while True:
            try:
                return await conn.manage(op, args)
            except Moved as exc:
                ep = routing.next_hop(exc.attrs.get("info"), hops)
                if ep is None:
                    raise
                hops += 1
                if q is not None:
                    self.routes.remember(q, ep)
                conn = await self._answering(ep)
            except ConnectionLost:
                if op not in MOVABLE or moves >= MAX_MOVES or not self._elsewhere(conn):
                    raise
                moves += 1
                conn = await self._for(q)

    async def _for(self, queue: str | None) -> Connection:
        return await (self.conn_for(queue) if queue is not None else self.usable())

    def _elsewhere(self, conn: Connection) -> bool:
        """Whether a request lost with ``conn``'s node has somewhere else to go:
        ``conn`` is a side connection (its queue goes through the main node again),
        or a main one that a failover replaces."""
        return conn is not self.main or self._switch is not None

    async def _on_main(self, call: Callable[[Connection], Awaitable[T]]) -> T:
        """``call`` on the main connection; when its node is lost before it answers
        and the client fails over, on the new one (at most :data:`MAX_MOVES` times).
        Only for requests that are safe to send twice."""
        moves = 0
        while True:
            conn = await self.usable()
            try:
                return await call(conn)
            except ConnectionLost:
                if moves >= MAX_MOVES or not self._elsewhere(conn):
                    raise
                moves += 1

    async def stats(self) -> dict[str, Any]:
        """STATS of the main node (moves with a failover)."""
        return await self._on_main(lambda conn: conn.stats())

    async def sync(self) -> None:
        """A ``sync`` MANAGE on the main connection (moves with a failover) and on
        every side one alive. A router stores nothing and takes no MANAGE without a
        queue: with a router as main node, only the brokers are asked."""
        sides = [c for c in self.pool.conns.values() if c.broken is None and not c.closed]
        await asyncio.gather(self._on_main(_sync), *(c.manage("sync", {}) for c in sides))

    async def locate(self, queue: str) -> dict[str, Any]:
        """LOCATE ``queue`` through the main node (moves with a failover)."""
        async def ask(main: Connection) -> dict[str, Any]:
            if main.welcome is None or not main.welcome.cluster:
                raise InvalidArgument("not a cluster node", endpoint=main.endpoint)
            return await main.locate(queue)

        return await self._on_main(ask)

    # ------------------------------------------------------------ waiting, closing

    async def wait_connected(self) -> None:
        """Until the main connection, and each consumer's, has a session and no
        failover or consumer move is under way."""
        while True:
            if self.main is None:
                raise RuntimeError("client is not connected: use 'async with Client(...)'")
            self.main.check()
            waits = self._unready()
            if not waits:
                return
            tasks = [asyncio.ensure_future(e.wait()) for e in waits]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in tasks:
                    t.cancel()

    def _unready(self) -> list[asyncio.Event]:
        assert self.main is not None
        conns = [self.main, *(c.connection for c in self.consumers.values())]
        waits = [c.session for c in conns if not c.session.is_set()]
        if waits or self._relocating or self._switch is not None:
            if self._changed is None:
                self._changed = asyncio.Event()
            waits.append(self._changed)
        return waits

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        await self.tasks.close()
        if self.main is not None:
            await self.main.close()
        await self.pool.close()
        self._notify()


async def _sync(conn: Connection) -> dict[str, Any]:
    w = conn.welcome
    if w is not None and routing.is_router(w.cluster):
        return {}
    return await conn.manage("sync", {})
