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
from zq.security.curve import ClientKeys

if TYPE_CHECKING:
    from zq.client.consumer import Consumer
    from zq.client.outbox import Sent

__all__ = ["Conns"]

STAGGER = 0.25  # seconds between the starts of two racing connection attempts
RETRY = 0.25  # seconds before an endpoint that refused or failed is tried again


class Conns:
    """The main connection, the side connections and what is known about where
    queues live."""

    def __init__(self, endpoints: tuple[str, ...], *, name: str, publish_window: int,
                 connect_timeout: float, producer: bytes, keys: ClientKeys | None = None
                 ) -> None:
        self.endpoints = endpoints
        self.keys = keys  # CURVE: the client's key pair and the servers' public key
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
                          producer=self.producer, seqs=self.seqs, owner=self,
                          keys=self.keys)

    # The owner of every connection (connection.Owner): Failover says what moves.

    def publish_moved(self, conn: Connection, sent: Sent, exc: ZqError) -> bool:
        raise NotImplementedError

    def lost(self, conn: Connection, exc: ZqError) -> None:
        raise NotImplementedError

    async def _connect_any(self, eps: list[str], budget: float,
                           old: Connection | None = None) -> Connection:
        """A new connection to the first of ``eps`` that answers, within ``budget``
        seconds; ``old`` if its node answers again first.

        With several endpoints the attempts race, as Happy Eyeballs (RFC 8305) does
        for addresses: the first starts at once and each next one STAGGER seconds
        later unless one answered, so the first endpoint wins when it is up; an
        endpoint that refuses (a replicated broker's standby) or fails is tried again
        after RETRY; one that stays silent (a node that is down, or a standby about to
        be promoted, whose socket keeps the HELLO) keeps its attempt to the end."""
        if len(eps) == 1:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + budget
            conn = self._make(eps[0], budget)
            try:
                await conn.open()
            except ConnectionLost as exc:
                # A standby names its primary: go there (once), as for MOVED.
                primary = exc.attrs.get("primary")
                if not isinstance(primary, str) or primary == eps[0]:
                    raise
                conn = self._make(primary, max(0.0, deadline - loop.time()))
                await conn.open()
            return conn
        return await _Race(self, eps, budget, old).run()

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


class _Race:
    """Attempts to connect to several endpoints at once (see Conns._connect_any)."""

    def __init__(self, conns: Conns, eps: list[str], budget: float,
                 old: Connection | None) -> None:
        self.conns = conns
        self.eps = eps
        self.old = old
        self.loop = asyncio.get_running_loop()
        self.deadline = self.loop.time() + budget
        self.budget = budget
        self.tasks: dict[asyncio.Task[Connection], str] = {}
        self.started: set[str] = set()

    async def run(self) -> Connection:
        due: list[tuple[float, str]] = [(self.loop.time() + i * STAGGER, ep)
                                        for i, ep in enumerate(self.eps)]
        try:
            while True:
                now = self.loop.time()
                old = self.old
                if old is not None and old.broken is None and not old.closed:
                    return old
                for at, ep in [d for d in due if d[0] <= now]:
                    due.remove((at, ep))
                    self._start(ep)
                if now >= self.deadline or (not self.tasks and not due):
                    raise self._lost()
                wake = min([at for at, _ in due] + [self.deadline, now + STAGGER])
                if not self.tasks:  # every attempt refused: the next is due at ``wake``
                    await asyncio.sleep(max(0.0, wake - now))
                    continue
                done, _ = await asyncio.wait(self.tasks, timeout=max(0.0, wake - now),
                                             return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    ep = self.tasks.pop(task)
                    exc = task.exception()
                    if exc is None:
                        return task.result()
                    if not isinstance(exc, ConnectionLost):
                        raise exc
                    primary = exc.attrs.get("primary")
                    if isinstance(primary, str) and primary not in self.started:
                        self._start(primary)  # a standby named its primary: race it too
                    if self.loop.time() + RETRY < self.deadline:
                        due.append((self.loop.time() + RETRY, ep))
        finally:
            await self._cancel()

    def _start(self, ep: str) -> None:
        if ep in self.tasks.values():
            return  # under way already (a standby named it before its turn)
        self.started.add(ep)
        left = self.deadline - self.loop.time()
        conn = self.conns._make(ep, max(0.0, left))
        task = self.loop.create_task(self._open(conn), name=f"zq connect {ep}")
        self.tasks[task] = ep

    @staticmethod
    async def _open(conn: Connection) -> Connection:
        await conn.open()
        return conn

    async def _cancel(self) -> None:
        """The losers: cancelled, and closed if they connected meanwhile."""
        tasks = list(self.tasks)
        self.tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                conn = await task
                await conn.close()

    def _lost(self) -> ConnectionLost:
        return ConnectionLost(f"no zq node answered at {', '.join(self.eps)} within "
                              f"{self.budget:g}s", endpoint=self.eps[0] if self.eps else "")
