"""Where a client's consumers consume (PROTOCOL.md section 17): the
:class:`~zq.client.consumer.Placer` of every consumer of a :class:`zq.Client`.

* A consumer of a client whose main node is a router is placed with LOCATE on
  the broker that holds its queue; otherwise it consumes from the main node.
* A consumer whose CREDIT is answered MOVED moves to the broker named (at most
  :data:`~zq.client.routing.MAX_HOPS` moves within ``connect_timeout``).
* When a consumer's broker (not the main node) is lost, the consumer LOCATEs
  its queue again every heartbeat until that broker, or a new owner, answers.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from zq.client import routing
from zq.client.conns import Conns
from zq.errors import ConnectionLost, InvalidArgument, Moved, ZqError

if TYPE_CHECKING:
    from zq.client.connection import Connection
    from zq.client.consumer import Consumer

__all__ = ["Placement"]


class Placement(Conns):
    """Places consumers, follows their MOVED answers and relocates them."""

    async def place(self, consumer: Consumer) -> Connection:
        q = consumer.queue
        other = self.consumers.get(q)
        if other is not None and other is not consumer:
            raise ValueError(f"this client already consumes {q!r}; one consumer per queue "
                             "per client")
        self.consumers[q] = consumer
        main = await self.usable()
        if main.welcome is None or not routing.is_router(main.welcome.cluster):
            return main
        ep = routing.located(await main.locate(q))
        if ep is None:
            raise InvalidArgument(f"the router's LOCATION for {q!r} names no endpoint")
        return await self._conn_at(ep)

    def forget(self, consumer: Consumer) -> None:
        if self.consumers.get(consumer.queue) is consumer:
            del self.consumers[consumer.queue]
            self._hops.pop(consumer.queue, None)

    def on_error(self, consumer: Consumer, exc: ZqError) -> bool:
        if self.closed or self.consumers.get(consumer.queue) is not consumer:
            return False
        if isinstance(exc, Moved):
            return self._follow(consumer, exc)
        if isinstance(exc, ConnectionLost) and consumer.connection is not self.main:
            self._relocate(consumer, None)
        elif isinstance(exc, ConnectionLost) and self._switch is not None:
            return True  # a failover is under way: it moves the consumer (or fails it)
        return False

    def _follow(self, consumer: Consumer, exc: Moved) -> bool:
        """CREDIT answered MOVED: to the broker named, at once if connected to it."""
        ep = routing.next_hop(exc.attrs.get("info"), 0)
        if ep is not None and (consumer.connection.endpoint == ep
                               or consumer.queue in self._relocating):
            return True  # one more answer to credit sent before it moved: it is on its way
        hops = self._hops.get(consumer.queue)
        if hops is None:
            hops = self._hops[consumer.queue] = routing.Hops(max(1.0, self.connect_timeout))
        if ep is None or not hops.allow(asyncio.get_running_loop().time()):
            return False
        target = self._alive(ep)
        if target is not None:
            consumer.move_to(target, lost=False)
        else:
            self._relocate(consumer, ep)
        return True

    def _relocate(self, consumer: Consumer, ep: str | None) -> None:
        if consumer.queue not in self._relocating:
            self._relocating.add(consumer.queue)
            self.tasks.spawn(self._relocation(consumer, ep), f"zq place {consumer.queue}")

    async def _relocation(self, consumer: Consumer, ep: str | None) -> None:
        """Until ``consumer`` has a live connection to its queue's broker: to ``ep``
        first, if given; then, every heartbeat, where LOCATE says (when its own node
        answers again first, that connection granted its window again)."""
        refused = ep is not None  # its credit was refused (MOVED): it must move
        try:
            while not self.closed and self.consumers.get(consumer.queue) is consumer:
                if ep is not None and await self._move(consumer, ep, refused):
                    return
                if refused and consumer.error is None:
                    consumer.fail(ConnectionLost(f"no zq node answered at {ep}", endpoint=ep))
                if not refused and consumer.connection.broken is None:
                    return  # its node answered again (and the connection granted credit)
                await self._beat(consumer.connection)
                ep = await self._locate_quietly(consumer.queue) or ep
        finally:
            self._relocating.discard(consumer.queue)
            self._notify()

    async def _move(self, consumer: Consumer, ep: str, refused: bool) -> bool:
        """Move ``consumer`` to ``ep`` if a node answers there; whether it moved."""
        conn = await self._try(ep)
        if conn is None or (conn is consumer.connection and not refused):
            return False
        consumer.move_to(conn, lost=consumer.connection.broken is not None)
        return True

    async def _try(self, ep: str) -> Connection | None:
        with contextlib.suppress(ZqError):
            conn = await self._conn_at(ep)
            if conn.broken is None:
                return conn
        return None

    async def _beat(self, conn: Connection) -> None:
        """One heartbeat of the main node, or less if ``conn``'s node answers again."""
        main = self.main
        w = main.welcome if main is not None else None
        interval = w.heartbeat_ms / 1000 if w is not None else 1.0
        if conn.broken is None:
            await asyncio.sleep(interval)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval):
                await conn.session.wait()

    async def _locate_quietly(self, queue: str) -> str | None:
        main = self.main
        if main is None or main.broken is not None or main.welcome is None \
                or not main.welcome.cluster:
            return None
        try:
            async with asyncio.timeout(self.connect_timeout):
                return routing.located(await main.locate(queue))
        except (ZqError, TimeoutError):
            return None
