"""What moves between a client's connections when a node is lost or a queue MOVED
(PROTOCOL.md sections 11.4 and 17).

:class:`Failover` is the owner of every connection of a client
(:class:`~zq.client.connection.Owner`); a connection calls it before it fails
what waits on it, so that unanswered PUBLISH frames can go elsewhere, each with
its seq (the producer id is the client's, so a broker that sees a frame twice
stores it once and confirms it with its first ids):

* **The main node is lost** and the client has other endpoints: its unanswered
  publishes go to a new main connection on the next endpoint that answers
  (:meth:`Failover._failover`), and its consumers move with them. They fail with
  ConnectionLost only if no endpoint answers within ``connect_timeout``.
* **A side node is lost** (a broker a MOVED sent publishes to): its unanswered
  publishes go to where their queue is now (:meth:`Failover._where_now`): through
  the main node when it is a router, which forwards them to the queue's broker
  (or answers UNAVAILABLE while that broker is down), else to the broker a
  LOCATE through the main node names; when that is the lost broker itself, it
  is waited for, within ``connect_timeout``, before they fail with
  ConnectionLost.
* **MOVED**: a PUBLISH answered MOVED goes to the broker named, at most
  :data:`~zq.client.routing.MAX_HOPS` in a row, and the queue's later
  publishes go there straight.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from zq.client import routing
from zq.client.conns import Conns
from zq.errors import ClientClosed, ConnectionLost, ZqError

if TYPE_CHECKING:
    from zq.client.connection import Connection
    from zq.client.outbox import Sent

__all__ = ["Failover"]

log = logging.getLogger("zq.client")

_PAUSE = 1.0  # seconds: the least time between two failover rounds


class Failover(Conns):
    """Owner of every connection of a client: MOVED answers and lost nodes."""

    # ------------------------------------------------------------ MOVED

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
            conn = await self._answering(ep)
        except asyncio.CancelledError:
            sent.reject(ClientClosed("client closed"))
            raise
        except ZqError as exc:
            self.routes.forget(sent.frame.queue)
            sent.reject(exc)
            return
        conn.adopt([sent], resent=False)

    # ------------------------------------------------------------ a node is lost

    def lost(self, conn: Connection, exc: ZqError) -> None:
        if self.closed:
            return
        if conn is not self.main:
            self.routes.forget_endpoint(conn.endpoint)  # consumers there look for a new place
            pending = conn.hand_over()
            if pending:
                self.tasks.spawn(self._resend(conn, pending), f"zq resend from {conn.endpoint}")
        elif len(self.endpoints) > 1 and self._switch is None:
            pending = conn.hand_over()
            self._switch = asyncio.get_running_loop().create_future()
            self.tasks.spawn(self._failover(conn, pending), "zq failover")

    async def _resend(self, old: Connection, pending: list[Sent]) -> None:
        """The publishes ``old`` (a side connection) had no answer for when it lost its
        node: those of each queue go, with their seqs, to where the queue is now."""
        log.warning("zq: node at %s lost; %d unanswered PUBLISH frame(s) go where their "
                    "queue is now", old.endpoint, len(pending))
        by_queue: dict[str, list[Sent]] = {}
        for sent in pending:  # in seq order, and so each queue's
            by_queue.setdefault(sent.frame.queue, []).append(sent)
        await asyncio.gather(*(self._resend_queue(queue, sents, old)
                               for queue, sents in by_queue.items()))

    async def _resend_queue(self, queue: str, sents: list[Sent], old: Connection) -> None:
        try:
            conn = await self._where_now(queue, old)
        except asyncio.CancelledError:
            _reject(sents, ClientClosed("client closed"))
            raise
        except ZqError as exc:
            _reject(sents, exc)
            return
        conn.adopt(sents, resent=True)

    async def _where_now(self, queue: str, old: Connection) -> Connection:
        """Where publishes to ``queue`` go now that ``old`` lost its node: the main
        node if it is a router (or not in a cluster); else the broker a LOCATE through
        it names, once it has a session (``old``'s own node is waited for within
        ``connect_timeout``). Raises ConnectionLost if none answers."""
        main = await self.usable()
        w = main.welcome
        if w is None or not w.cluster or routing.is_router(w.cluster):
            return main
        try:
            async with asyncio.timeout(self.connect_timeout):
                ep = routing.located(await main.locate(queue))
        except TimeoutError:
            raise ConnectionLost(f"no LOCATION for {queue!r} from {main.endpoint} within "
                                 f"{self.connect_timeout:g}s", endpoint=main.endpoint) from None
        if ep is None or ep == main.endpoint:
            return main
        conn = await self._answering(ep)
        self.routes.remember(queue, ep)
        return conn

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
                    for consumer in list(old.consumers.values()):
                        consumer.fail(exc)  # (it moves on if a later round connects)
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


def _reject(sents: list[Sent], exc: ZqError) -> None:
    for sent in sents:
        sent.reject(exc)


def _fail(pending: list[Sent], switch: asyncio.Future[Connection], exc: ZqError) -> None:
    _reject(pending, exc)
    if not switch.done():
        switch.set_exception(exc)
        switch.exception()  # retrieved: publishes may or may not be waiting for it
