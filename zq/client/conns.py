"""The connections of one :class:`zq.Client`, and the state its parts share.

:class:`Conns` holds the main connection, the side connections (a
:class:`~zq.client.pool.Pool`), the queue routes MOVED answers taught, the
consumers and the background tasks, and finds the connection for a queue or an
endpoint. :class:`~zq.client.failover.Failover` (what moves when a node is lost
or a queue MOVED) and :class:`~zq.client.placement.Placement` (where consumers
consume) build on it; :class:`~zq.client.nodes.Nodes` puts them together.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from zq.client import routing
from zq.client.connection import Connection
from zq.client.outbox import Seqs
from zq.client.pool import Pool, Tasks
from zq.errors import ConnectionLost, ZqError

if TYPE_CHECKING:
    from zq.client.consumer import Consumer
    from zq.client.outbox import Sent

__all__ = ["Conns"]

ATTEMPT = 1.5  # seconds: the longest first try of one of several endpoints (doubles per round)
ROUND_PAUSE = 0.1  # seconds between two rounds over the endpoints


class Conns:
    """The main connection, the side connections and what is known about where
    queues live."""

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

    # The owner of every connection (connection.Owner): Failover says what moves.

    def publish_moved(self, conn: Connection, sent: Sent, exc: ZqError) -> bool:
        raise NotImplementedError

    def lost(self, conn: Connection, exc: ZqError) -> None:
        raise NotImplementedError

    async def _connect_any(self, eps: list[str], budget: float,
                           old: Connection | None = None) -> Connection:
        """A new connection to the first of ``eps`` that answers, within ``budget``
        seconds; ``old`` if its node answers again first. With several endpoints they
        are tried in turn, round after round, each attempt within a fair share of what
        is left and at most ATTEMPT seconds in the first round (twice that in the next,
        and so on): an endpoint that refuses at once (a replicated broker's standby)
        or is down costs little, and one that comes up later (the standby promoted)
        is found in a later round."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        error: ConnectionLost | None = None
        cap = ATTEMPT
        while True:
            for i, ep in enumerate(eps):
                if old is not None and old.broken is None and not old.closed:
                    return old
                left = deadline - loop.time()
                if left <= 0 and error is not None:
                    break
                share = routing.attempt_timeout(left, len(eps) - i)
                conn = self._make(ep, share if len(eps) == 1 else min(share, cap))
                try:
                    await conn.open()
                except ConnectionLost as exc:
                    error = exc
                    continue
                return conn
            if len(eps) == 1 or loop.time() >= deadline:
                break
            cap *= 2
            await asyncio.sleep(min(ROUND_PAUSE, max(0.0, deadline - loop.time())))
        if len(eps) == 1 and error is not None:
            raise error
        raise ConnectionLost(f"no zq node answered at {', '.join(eps)} within {budget:g}s",
                             endpoint=eps[0] if eps else "")

    # ------------------------------------------------------------ finding a connection

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

    async def _answering(self, ep: str) -> Connection:
        """The connection to ``ep`` with a session. One that lost its node probes it
        every heartbeat: it is waited for, as a new one is, for at most
        ``connect_timeout``. Raises ConnectionLost if no node answers there in time."""
        main = self.main
        if main is not None and main.endpoint == ep:
            return await self.usable()
        conn = await self.pool.get(ep)
        broken = conn.broken
        if broken is not None:
            try:
                async with asyncio.timeout(self.connect_timeout):
                    await conn.session.wait()
            except TimeoutError:
                raise broken from None
        conn.check()
        return conn

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None
