"""``zq.Client``: publish, consume and inspect a zq broker from asyncio."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from types import TracebackType
from typing import Any

from zq.client import routing
from zq.client.args import (
    MAX_PRIORITY,
    check_body,
    check_fits,
    check_headers,
    check_publishable_once,
    check_queue,
    make_options,
)
from zq.client.connection import Connection
from zq.client.consumer import Consumer
from zq.client.nodes import Nodes
from zq.client.operations import Operations
from zq.client.outbox import limits_with, options_size
from zq.client.streams import GroupConsumer, Start, StreamOps, start_arg
from zq.client.topics import TopicOps, topic_target
from zq.config import DEFAULT_ENDPOINT
from zq.errors import InvalidArgument
from zq.history import MAX_NAME
from zq.protocol import codec
from zq.protocol import frames as f
from zq.protocol.names import check_queue_name
from zq.security.curve import client_keys

__all__ = ["MAX_PRIORITY", "Client", "default_endpoint", "make_options"]


def default_endpoint() -> str:
    """``$ZQ_ENDPOINT`` (one endpoint, or several separated by commas), else the
    broker's default endpoint."""
    return os.environ.get("ZQ_ENDPOINT") or DEFAULT_ENDPOINT


class Client(Operations, TopicOps, StreamOps):
    """A connection to a zq broker, or to a cluster through its routers.

    ``async with zq.Client("tcp://127.0.0.1:5555") as client:`` opens a session
    (raising ``zq.ConnectionLost`` if no broker answers within
    ``connect_timeout``) and closes it on exit.

    Several endpoints (routers and/or brokers: a list, or one string with commas)
    give a client that connects to the first that answers, each tried within a
    fair share of ``connect_timeout``, and that fails over: when that node is
    lost, its unanswered publishes go, with the same seqs, to the next endpoint
    that answers, and fail with ``zq.ConnectionLost`` only if none answers within
    ``connect_timeout``. In a cluster, a publish answered MOVED goes to the broker
    named (and later ones to that queue go there straight); when that broker is
    lost, its unanswered publishes go, with their seqs, to where the queue is now
    (through the router, or to the broker a LOCATE names, waited for within
    ``connect_timeout`` if it is the lost one). Consumers receive from the broker
    that holds their queue (see :meth:`locate`).

    Requests waiting for an answer when their node is lost: with several
    endpoints, those that are safe to send twice go to the next node that
    answers: :meth:`stats`, :meth:`locate`, :meth:`sync` and the queue
    operations that change nothing or that do the same when done twice
    (``declare_queue``, ``queue_info``, ``queues``, ``peek``, ``pause_queue``,
    ``resume_queue``, ``add_schedule``, ``schedules``, ``task_status``,
    ``wait_result``). The others (``purge_queue``, ``delete_queue``,
    ``redrive``, ``complete``, ``remove_schedule``) raise ``zq.ConnectionLost``:
    they may have taken effect, and only the application knows whether to do
    them again.

    ``publish_window`` bounds how many published messages may await their
    confirm; a producer that outruns the broker waits instead of growing memory.

    Publishing is idempotent across reconnects: the client has a random producer
    id (``producer_id``) that every HELLO names, and numbers its PUBLISH frames
    without reuse, so a frame resent after a broken session that the broker had
    stored already is confirmed with its first ids and not stored twice.
    """

    def __init__(self, endpoint: str | Sequence[str] | None = None, *, name: str = "",
                 publish_window: int = 10_000, connect_timeout: float = 5.0,
                 curve_secret: str | None = None, server_key: str | None = None) -> None:
        if publish_window < 1:
            raise ValueError("publish_window must be >= 1")
        if not isinstance(name, str) or len(name.encode()) > MAX_NAME:
            raise InvalidArgument(f"a client name is a str of at most {MAX_NAME} UTF-8 "
                                  f"bytes (it goes into attempt histories), got {name!r:.80}")
        self.endpoints = routing.endpoints(endpoint or default_endpoint())
        self.name = name or f"client-{os.getpid()}"
        self.publish_window = publish_window
        self.connect_timeout = connect_timeout
        self.producer_id = os.urandom(16)
        # CURVE (docs/SECURITY.md): the arguments, else ZQ_CURVE_SECRET and ZQ_SERVER_KEY.
        self.keys = client_keys(curve_secret, server_key)
        self._nodes = Nodes(self.endpoints, name=self.name, publish_window=publish_window,
                            connect_timeout=connect_timeout, producer=self.producer_id,
                            keys=self.keys)

    @property
    def endpoint(self) -> str:
        """The endpoint of the main connection (the first endpoint before connecting)."""
        main = self._nodes.main
        return main.endpoint if main is not None else self.endpoints[0]

    @property
    def _conn(self) -> Connection | None:
        return self._nodes.main

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def connect(self) -> None:
        nodes = self._nodes  # as set now (a test may clear producer_id, say)
        nodes.name, nodes.publish_window = self.name, self.publish_window
        nodes.connect_timeout, nodes.producer = self.connect_timeout, self.producer_id
        await nodes.connect()

    async def close(self) -> None:
        await self._nodes.close()

    @property
    def conn(self) -> Connection:
        """The main connection (raises if the client is closed or its node lost)."""
        conn = self._nodes.main
        if conn is None:
            raise RuntimeError("client is not connected: use 'async with Client(...)'")
        conn.check()
        if conn.broken is not None:
            raise conn.broken
        return conn

    @property
    def connected(self) -> bool:
        """Whether the main node currently knows this client's session."""
        main = self._nodes.main
        return main is not None and main.session.is_set()

    async def wait_connected(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until a session is open again after a node was lost.

        The client probes a lost node every heartbeat interval; when one answers
        on the endpoint again, a new session opens by itself, unconfirmed
        publishes are sent again, and consumers get their credit back. A client
        with several endpoints fails over instead; a consumer whose broker was
        lost looks for it (LOCATE) until it answers. This returns once the main
        connection and every consumer's connection have a session again.
        """
        async with asyncio.timeout(timeout):
            await self._nodes.wait_connected()

    async def _manage(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        return await self._nodes.manage(op, args)

    async def _sync(self) -> None:
        await self._nodes.sync()

    async def locate(self, queue: str) -> dict[str, Any]:
        """Where ``queue`` lives: ``{queue, broker, endpoint, version, exists}`` (the
        broker that has it, or the one a new queue of that name would be placed on).

        Raises ``zq.InvalidArgument`` if the main node is not in a cluster.
        """
        check_queue(queue)
        return await self._nodes.locate(queue)

    @property
    def max_batch(self) -> int:
        w = self.conn.welcome
        return w.max_batch if w is not None else 1000

    async def publish(self, queue: str | None, body: bytes, *,
                      headers: dict[str, Any] | None = None, priority: int | None = None,
                      delay: float | None = None, eta: datetime | float | None = None,
                      ttl: float | None = None, time_limit: float | None = None,
                      max_attempts: int | None = None, tenant: str | None = None,
                      dedup_id: str | None = None, topic: str | None = None,
                      key: str | None = None) -> int:
        """Publish one message; return its id once the broker confirms it is stored.

        Calls made during the same event-loop turn travel as one frame, so many
        concurrent ``publish`` calls cost about as much as one ``publish_many``
        (calls with options share a frame only with calls of the same options).

        Options (None: the queue's setting):

        * ``priority``: 0..9, higher first (default 0).
        * ``delay``: seconds before it may be delivered; ``eta``: not before this
          ``datetime`` (aware, or naive in local time) or wall-clock epoch
          seconds. With both, the later time wins.
        * ``ttl``: seconds it may wait for delivery before it expires to the DLQ.
        * ``time_limit``: seconds one attempt may run before it is retried.
        * ``max_attempts``: failed attempts before it goes to the DLQ.
        * ``tenant``: the fair-share group it belongs to.
        * ``dedup_id``: a second publish with the same id to the same queue within
          the queue's dedup window stores nothing and returns the first one's id.

        With ``topic`` (and ``queue`` None) the message goes to every queue bound to
        the topic whose binding matches ``key`` (default ""), one copy each, in one
        commit (see :meth:`bind`); the id returned is the copy's in the first of those
        queues by name, 0 if the topic dropped it (no binding matched and the topic
        is set to drop; else ``zq.Unroutable``). A topic takes no ``dedup_id``.

        Durations are rounded up to whole milliseconds. A bad value raises
        ``zq.InvalidArgument`` before anything is sent. Queue names follow the rule
        of :mod:`zq.protocol.names` (``zq.InvalidQueueName`` otherwise), and
        dead-letter queues (``*.dlq``) take no publishes.
        """
        queue = topic_target(queue, topic, key, dedup_id)
        check_publishable_once(queue)
        body = check_body(body)
        headers = check_headers(headers)
        nodes = self._nodes
        conn = nodes.main
        if conn is None or conn.broken is not None or conn.closed or nodes.routed:
            conn = await nodes.conn_for(queue)  # a failover, a MOVED queue, or an error
        if (priority is None and delay is None and eta is None and ttl is None
                and time_limit is None and max_attempts is None and tenant is None
                and dedup_id is None and topic is None and key is None):
            check_fits(queue, body, headers, conn.limits)
            if conn.unconfirmed >= conn.publish_window:
                # The wait may outlive the session, the node or the client.
                conn = await nodes.window(conn, 1, queue)
            fut = conn.publish(queue, body, headers)
        else:
            opts = make_options(priority, delay, eta, ttl, time_limit, max_attempts, tenant,
                                dedup_id)
            if topic is not None or key is not None:
                opts = replace(opts or f.Options(), key=key or "")
            if opts is None:
                return await self.publish(queue, body, headers=headers)
            check_fits(queue, body, headers, limits_with(conn.limits, options_size(opts)))
            if conn.unconfirmed >= conn.publish_window:
                conn = await nodes.window(conn, 1, queue)
            fut = conn.publish_opts(queue, body, headers, opts)
        result: int = await fut
        return result

    async def publish_many(self, queue: str | None, bodies: Iterable[bytes], *,
                           headers: Iterable[dict[str, Any] | None] | None = None,
                           priority: int | None = None, delay: float | None = None,
                           eta: datetime | float | None = None, ttl: float | None = None,
                           time_limit: float | None = None, max_attempts: int | None = None,
                           tenant: str | None = None, topic: str | None = None,
                           key: str | None = None) -> list[int]:
        """Publish many messages in as few frames as the broker allows; return their ids.

        The options, as for :meth:`publish`, apply to every message; so do ``topic``
        and ``key`` (the ids are those of the copies in the first matching queue).
        """
        queue = topic_target(queue, topic, key, None)
        check_publishable_once(queue)
        opts = None
        if (priority is not None or delay is not None or eta is not None or ttl is not None
                or time_limit is not None or max_attempts is not None or tenant is not None):
            opts = make_options(priority, delay, eta, ttl, time_limit, max_attempts, tenant)
        if topic is not None or key is not None:
            opts = replace(opts or f.Options(), key=key or "")
        items = [check_body(b) for b in bodies]
        hdrs = [check_headers(h) for h in headers] if headers is not None else []
        if hdrs and len(hdrs) != len(items):
            raise ValueError(f"{len(hdrs)} headers for {len(items)} bodies")
        if not any(h is not None for h in hdrs):
            hdrs = []
        nodes = self._nodes
        conn = nodes.main
        if conn is None or conn.broken is not None or conn.closed or nodes.routed:
            conn = await nodes.conn_for(queue)
        limits = conn.limits if opts is None else limits_with(conn.limits, options_size(opts))
        qlen = len(queue.encode())
        lens = list(map(len, items))
        hsizes = [codec.header_size(h) for h in hdrs] if hdrs else None
        if hsizes is not None or not codec.fits_together(qlen, lens, limits):
            for i, body in enumerate(items):  # some message may be too big on its own
                check_fits(queue, body, hdrs[i] if hdrs else None, limits)
        w = conn.welcome
        ends = codec.split(qlen, lens, hsizes, w.max_batch if w is not None else 1000, limits)
        futs: list[asyncio.Future[Any]] = []
        start = 0
        for end in ends:
            chunk = items[start:end]
            if conn.broken is not None or conn.unconfirmed + len(chunk) > conn.publish_window:
                conn = await nodes.window(conn, len(chunk), queue)
            futs.append(conn.publish_frame(queue, chunk, hdrs[start:end] if hdrs else [],
                                           opts))
            start = end
        ids: list[int] = []
        for chunk_ids in await asyncio.gather(*futs):
            ids.extend(chunk_ids)
        return ids

    def consume(self, queue: str, *, prefetch: int = 100, auto_start: bool = True,
                group: str | None = None, start: Start | None = None) -> Consumer:
        """Messages from ``queue``, at most ``prefetch`` unacked at a time.

        With ``auto_start`` (the default) a message counts as started when the
        application takes it from the consumer; if this client dies, messages it
        received and had not started go back without counting an attempt. Without
        it, call :meth:`Message.mark_started` when work on a message begins.

        A stream is read in a consumer ``group``: the group's consumers share its
        entries, and each message's ``offset`` says where it is in the stream. A new
        group starts at ``start``: "first", "last", "next" (the default: entries
        appended from now on), an offset, or a time (a datetime or ISO 8601 string);
        a group that exists goes on from its committed offset.
        """
        check_queue_name(queue)
        if not isinstance(prefetch, int) or prefetch < 1:
            raise ValueError(f"prefetch must be a positive int, got {prefetch!r}")
        if group is not None:
            check_queue_name(group)
            return GroupConsumer(self._nodes.current(), queue, prefetch, group=group,
                                 start=start_arg(start), auto_start=auto_start,
                                 placer=self._nodes)
        if start is not None:
            raise ValueError("start=... is where a stream's group begins: give group=... too")
        return Consumer(self._nodes.current(), queue, prefetch, auto_start=auto_start,
                        placer=self._nodes)

    async def stats(self) -> dict[str, Any]:
        """The main node's counters: totals, per queue, per connected peer (a router's:
        its own counters and each link's state)."""
        return await self._nodes.stats()
