"""The connections of one :class:`zq.Client` (PROTOCOL.md sections 11.4 and 17).

* The **main** connection goes to the first of the client's endpoints that
  answers (routers and/or brokers). Requests and publishes go there, unless a
  MOVED named another broker for the queue.
* **Failover**: when the main connection gives its node up and the client has
  other endpoints, its unanswered PUBLISH frames go, with the same seqs, to a
  new main connection on the next endpoint that answers; the producer id is the
  client's, so a node that sees a frame twice confirms it once. Its consumers
  move too.
* **MOVED**: a PUBLISH answered MOVED goes, with its seq, to the broker named
  (a side connection from :class:`~zq.client.pool.Pool`), and the queue's
  later publishes go there straight (:class:`~zq.client.routing.Routes`); at
  most :data:`~zq.client.routing.MAX_HOPS` in a row. A consumer whose CREDIT is
  answered MOVED moves to that broker.
* **Consumers** of a client whose main node is a router are placed with
  LOCATE on the broker that holds their queue; when that broker is lost they
  LOCATE again every heartbeat until it, or a new owner, answers.

All connections of a client share one seq counter (:class:`~zq.client.outbox.Seqs`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from zq.client import routing
from zq.client.connection import Connection
from zq.client.outbox import Seqs
from zq.client.pool import Pool, Tasks
from zq.errors import ClientClosed, ConnectionLost, InvalidArgument, Moved, ZqError

if TYPE_CHECKING:
    from zq.client.consumer import Consumer
    from zq.client.outbox import Sent

__all__ = ["Nodes"]

log = logging.getLogger("zq.client")

_PAUSE = 1.0  # seconds: the least time between two failover rounds


class Nodes:
    """The main connection, the side connections and what moves between them."""

    def __init__(self, endpoints: tuple[str, ...], *, name: str, publish_window: int,
                 connect_timeout: float, producer: bytes) -> None:
        self.endpoints = endpoints
        self.name = name
        self.publish_window = publish_window
        self.connect_timeout = connect_timeout
        self.producer = producer
        self.seqs = Seqs()
        self.routes = routing.Routes()
        self.routed = self.routes.table  # the publish path only tests it for emptiness
        self.main: Connection | None = None
        self.pool = Pool(self._make)
        self.tasks = Tasks()
        self.consumers: dict[str, Consumer] = {}  # one per queue, on whichever connection
        self.closed = False
        self._hops: dict[str, routing.Hops] = {}  # MOVED answers each consumer followed
        self._relocating: set[str] = set()  # queues whose consumer looks for its broker
        self._switch: asyncio.Future[Connection] | None = None  # a failover under way
        self._changed: asyncio.Event | None = None  # for wait_connected

    def _make(self, endpoint: str, timeout: float | None = None) -> Connection:
        return Connection(endpoint, name=self.name, publish_window=self.publish_window,
                          connect_timeout=self.connect_timeout if timeout is None else timeout,
                          producer=self.producer, seqs=self.seqs, owner=self)

    # ------------------------------------------------------------ the main connection

    async def connect(self) -> None:
        if self.main is None:
            self.main = await self._connect_any(list(self.endpoints), self.connect_timeout)

    async def _connect_any(self, eps: list[str], budget: float,
                           old: Connection | None = None) -> Connection:
        """A new connection to the first of ``eps`` that answers, each tried within a
        fair share of ``budget`` seconds; ``old`` if its node answers again first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        error: ConnectionLost | None = None
        for i, ep in enumerate(eps):
            if old is not None and old.broken is None and not old.closed:
                return old
            conn = self._make(ep, routing.attempt_timeout(deadline - loop.time(), len(eps) - i))
            try:
                await conn.open()
            except ConnectionLost as exc:
                error = exc
                continue
            return conn
        if len(eps) == 1 and error is not None:
            raise error
        raise ConnectionLost(f"no zq node answered at {', '.join(eps)} within {budget:g}s",
                             endpoint=eps[0] if eps else "")

    def current(self) -> Connection:
        """The main connection, even while a failover replaces it (raises if the client
        is closed or not connected, or its only node is lost)."""
        conn = self.main
        if conn is None:
            raise RuntimeError("client is not connected: use 'async with Client(...)'")
        conn.check()
        if conn.broken is not None and self._switch is None:
            raise conn.broken
        return conn

    async def usable(self) -> Connection:
        """The main connection once it has a session: during a failover, the new one
        (waited for at most ``connect_timeout``)."""
        conn = self.current()
        switch = self._switch
        if conn.broken is None or switch is None:
            return conn
        try:
            async with asyncio.timeout(self.connect_timeout):
                return await asyncio.shield(switch)
        except TimeoutError:
            raise conn.broken or ConnectionLost("failover timed out") from None

    async def conn_for(self, queue: str) -> Connection:
        """Where a publish to ``queue`` goes: the broker a MOVED named, else the main node."""
        main = await self.usable()
        ep = self.routes.get(queue) if self.routed else None
        if ep is None or ep == main.endpoint:
            return main
        side = self.pool.alive(ep)
        if side is None:
            with contextlib.suppress(ZqError):
                side = await self.pool.get(ep)  # being opened for a frame that MOVED
            if side is None or side.broken is not None:
                self.routes.forget(queue)  # its broker is lost: through the main node again
                return main
        return side

    async def window(self, conn: Connection, n: int, queue: str) -> Connection:
        """Wait until ``n`` more messages fit the publish window of the connection
        for ``queue``; that connection (another one after a failover)."""
        while True:
            try:
                await conn.wait_window(n)
            except ConnectionLost:
                if self._switch is None:
                    raise
            if conn is self.main and conn.broken is None and not self.routed:
                return conn
            nxt = await self.conn_for(queue)
            if nxt is conn:
                return conn
            conn = nxt

    async def manage(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """MANAGE ``op`` where the queue it names lives (the main node without one);
        one refused with MOVED goes to the broker named, three hops at most."""
        queue = args.get("queue")
        conn = await (self.conn_for(queue) if isinstance(queue, str) else self.usable())
        hops = 0
        while True:
            try:
                return await conn.manage(op, args)
            except Moved as exc:
                ep = routing.next_hop(exc.attrs.get("info"), hops)
                if ep is None:
                    raise
                hops += 1
                if isinstance(queue, str):
                    self.routes.remember(queue, ep)
                conn = await self._conn_at(ep)

    async def sync(self) -> None:
        """A ``sync`` MANAGE on the main connection and on every side one alive."""
        main = await self.usable()
        conns = [main, *(c for c in self.pool.conns.values()
                         if c.broken is None and not c.closed)]
        await asyncio.gather(*(c.manage("sync", {}) for c in conns))

    async def locate(self, queue: str) -> dict[str, Any]:
        main = await self.usable()
        if main.welcome is None or not main.welcome.cluster:
            raise InvalidArgument("not a cluster node", endpoint=main.endpoint)
        return await main.locate(queue)

    # ------------------------------------------------------------ Owner: every connection

    def publish_moved(self, conn: Connection, sent: Sent, exc: ZqError) -> bool:
        queue = sent.frame.queue
        ep = None if self.closed else routing.next_hop(exc.attrs.get("info"), sent.hops)
        if ep is None:
            self.routes.forget(queue)
            return False
        sent.hops += 1
        self.routes.remember(queue, ep)
        target = self._alive(ep)
        if target is not None:
            target.adopt([sent], resent=False)
        else:
            self.tasks.spawn(self._send_later(ep, sent), f"zq publish {queue} to {ep}")
        return True

    async def _send_later(self, ep: str, sent: Sent) -> None:
        try:
            conn = await self._conn_at(ep)
            if conn.broken is not None:
                raise conn.broken
        except asyncio.CancelledError:
            sent.reject(ClientClosed("client closed"))
            raise
        except ZqError as exc:
            self.routes.forget(sent.frame.queue)
            sent.reject(exc)
            return
        conn.adopt([sent], resent=False)

    def lost(self, conn: Connection, exc: ZqError) -> None:
        if conn is not self.main:
            self.routes.forget_endpoint(conn.endpoint)  # consumers there look for a new place
        elif len(self.endpoints) > 1 and self._switch is None and not self.closed:
            pending = conn.hand_over()
            self._switch = asyncio.get_running_loop().create_future()
            self.tasks.spawn(self._failover(conn, pending), "zq failover")

    async def _failover(self, old: Connection, pending: list[Sent]) -> None:
        loop = asyncio.get_running_loop()
        switch = self._switch
        assert switch is not None
        log.warning("zq: node at %s lost; %d unanswered PUBLISH frame(s) go to the next "
                    "endpoint that answers", old.endpoint, len(pending))
        order = routing.failover_order(self.endpoints, old.endpoint)
        try:
            while True:
                began = loop.time()
                try:
                    new = await self._connect_any(order, self.connect_timeout, old)
                    break
                except ConnectionLost as exc:
                    _fail(pending, switch, exc)  # as a client with one endpoint would
                    pending = []
                    switch = self._switch = loop.create_future()
                    await asyncio.sleep(max(0.0, _PAUSE - (loop.time() - began)))
        except asyncio.CancelledError:
            _fail(pending, switch, ClientClosed("client closed"))
            raise
        await self._install(new, old, pending, switch)

    async def _install(self, new: Connection, old: Connection, pending: list[Sent],
                       switch: asyncio.Future[Connection]) -> None:
        if pending:
            new.adopt(pending, resent=True)
        if new is not old:
            self.main = new
            for consumer in list(old.consumers.values()):
                consumer.move_to(new, lost=True)
            old.owner = None
            await old.close()
            log.warning("zq: failed over from %s to %s", old.endpoint, new.endpoint)
        self._switch = None
        switch.set_result(new)
        self._notify()

    def _alive(self, ep: str) -> Connection | None:
        main = self.main
        if main is not None and main.endpoint == ep:
            return main if main.broken is None and not main.closed else None
        return self.pool.alive(ep)

    async def _conn_at(self, ep: str) -> Connection:
        main = self.main
        if main is not None and main.endpoint == ep:
            return main
        return await self.pool.get(ep)

    # ------------------------------------------------------------ Placer: consumers

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

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        await self.tasks.close()
        if self.main is not None:
            await self.main.close()
        await self.pool.close()
        self._notify()


def _fail(pending: list[Sent], switch: asyncio.Future[Connection], exc: ZqError) -> None:
    for sent in pending:
        sent.reject(exc)
    if not switch.done():
        switch.set_exception(exc)
        switch.exception()  # retrieved: publishes may or may not be waiting for it
