"""``zq.Client``: publish, consume and inspect a zq broker from asyncio."""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Iterable
from datetime import datetime
from types import TracebackType
from typing import Any

from zq.client.connection import Connection, limits_with, options_size
from zq.client.consumer import Consumer, complete_args
from zq.client.schedules import check_name, schedule_args
from zq.config import DEFAULT_ENDPOINT
from zq.errors import FrameTooLarge, InvalidArgument, InvalidQueueName
from zq.history import MAX_NAME
from zq.protocol import codec
from zq.protocol import frames as f
from zq.protocol.names import check_publishable, check_queue_name
from zq.settings import MAX_COUNT, from_map

MAX_PRIORITY = 9
_MAX_KEY = 255  # UTF-8 bytes in a tenant or a dedup id
_MS_MAX = 100 * 365 * 86_400_000  # a century: the broker's bound on every duration
_ETA_MAX = 1 << 62
_WAIT_MAX = 60.0  # seconds: the broker's bound on one MANAGE wait


def default_endpoint() -> str:
    """``$ZQ_ENDPOINT``, else the broker's default endpoint."""
    return os.environ.get("ZQ_ENDPOINT") or DEFAULT_ENDPOINT


def _check_fits(queue: str, body: bytes, headers: dict[str, Any] | None,
                limits: codec.Limits) -> None:
    hsize = codec.header_size(headers)
    if not codec.fits_stored(len(body), hsize, limits):
        raise FrameTooLarge(codec.too_large_text(0, len(body), hsize, limits),
                            limit=limits.max_frame)


def _check_queue(queue: str) -> None:
    """A name that can name an existing queue (see zq.protocol.names for new ones)."""
    if not isinstance(queue, str) or not queue or len(queue.encode()) > codec.MAX_QUEUE_NAME:
        raise InvalidQueueName(f"queue name must be a non-empty str of at most "
                               f"{codec.MAX_QUEUE_NAME} UTF-8 bytes, got {queue!r}", queue=queue)


_publishable: set[str] = set()  # names checked already: publishing checks each name once


def _check_publishable(queue: str) -> None:
    """The broker's rule for queues a producer writes to (so the error comes before
    anything is sent, and is the broker's: zq.InvalidQueueName)."""
    if queue not in _publishable:
        check_publishable(queue)
        if len(_publishable) < 10_000:
            _publishable.add(queue)


def _check_body(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, bytearray | memoryview):
        return bytes(body)
    raise TypeError(f"message body must be bytes, got {type(body).__name__}")


def _seconds(value: Any, what: str) -> float:
    if (not isinstance(value, int | float) or isinstance(value, bool)
            or not math.isfinite(value)):
        raise InvalidArgument(f"{what} must be a number of seconds, got {value!r}")
    return float(value)


def _ms(value: Any, what: str, lo: int) -> int:
    """Seconds to whole milliseconds, rounded up (a delay or a limit is never short)."""
    secs = _seconds(value, what)
    if secs < 0:
        raise InvalidArgument(f"{what} must be >= 0 seconds, got {value!r}")
    ms = math.ceil(round(secs * 1000, 6))
    if not lo <= ms <= _MS_MAX:
        if ms < lo:
            raise InvalidArgument(f"{what} must be > 0 seconds, got {value!r}")
        raise InvalidArgument(f"{what} must be at most a century, got {value!r}")
    return ms


def _wall(value: Any, what: str) -> float:
    """A datetime (aware, or naive in local time) or epoch seconds -> epoch seconds."""
    if isinstance(value, datetime):
        return value.timestamp()
    secs = _seconds(value, what)
    if secs < 0:
        raise InvalidArgument(f"{what} must be epoch seconds >= 0, got {value!r}")
    return secs


def _key(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value.encode()) > _MAX_KEY:
        raise InvalidArgument(f"{what} must be a str of 1..{_MAX_KEY} UTF-8 bytes, "
                              f"got {value!r}")
    return value


def make_options(priority: int | None = None, delay: float | None = None,
                 eta: datetime | float | None = None, ttl: float | None = None,
                 time_limit: float | None = None, max_attempts: int | None = None,
                 tenant: str | None = None, dedup_id: str | None = None) -> f.Options | None:
    """Validate publish options and convert them to the wire's :class:`Options`.

    Raises ``zq.InvalidArgument`` for a bad value. None when nothing is set.
    """
    if priority is not None and (type(priority) is not int
                                 or not 0 <= priority <= MAX_PRIORITY):
        raise InvalidArgument(f"priority must be an int 0..{MAX_PRIORITY}, got {priority!r}")
    delay_ms = _ms(delay, "delay", 0) if delay is not None else None
    eta_ms = None
    if eta is not None:
        eta_ms = math.ceil(round(_wall(eta, "eta") * 1000, 3))
        if eta_ms > _ETA_MAX:
            raise InvalidArgument(f"eta is too far away: {eta!r}")
    ttl_ms = _ms(ttl, "ttl", 1) if ttl is not None else None
    limit_ms = _ms(time_limit, "time_limit", 1) if time_limit is not None else None
    if max_attempts is not None and (type(max_attempts) is not int
                                     or not 1 <= max_attempts <= 1_000_000):
        raise InvalidArgument(f"max_attempts must be an int 1..1000000, got {max_attempts!r}")
    if tenant is not None:
        _key(tenant, "tenant")
    if dedup_id is not None:
        _key(dedup_id, "dedup_id")
    opts = f.Options(priority, delay_ms or None, eta_ms, ttl_ms, limit_ms, max_attempts,
                     tenant, dedup_id)
    return opts if opts != _NO_OPTIONS else None


_NO_OPTIONS = f.Options()


def _check_headers(headers: Any) -> f.Headers | None:
    if headers is None:
        return None
    if not isinstance(headers, dict) or not all(isinstance(k, str) for k in headers):
        raise TypeError("headers must be a dict with str keys")
    return headers


class Client:
    """A connection to one zq broker.

    ``async with zq.Client("tcp://127.0.0.1:5555") as client:`` opens a session
    (raising ``zq.ConnectionLost`` if no broker answers within
    ``connect_timeout``) and closes it on exit.

    ``publish_window`` bounds how many published messages may await their
    confirm; a producer that outruns the broker waits instead of growing memory.
    """

    def __init__(self, endpoint: str | None = None, *, name: str = "",
                 publish_window: int = 10_000, connect_timeout: float = 5.0) -> None:
        if publish_window < 1:
            raise ValueError("publish_window must be >= 1")
        if not isinstance(name, str) or len(name.encode()) > MAX_NAME:
            raise InvalidArgument(f"a client name is a str of at most {MAX_NAME} UTF-8 "
                                  f"bytes (it goes into attempt histories), got {name!r:.80}")
        self.endpoint = endpoint or default_endpoint()
        self.name = name or f"client-{os.getpid()}"
        self.publish_window = publish_window
        self.connect_timeout = connect_timeout
        self._conn: Connection | None = None

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def connect(self) -> None:
        if self._conn is not None:
            return
        conn = Connection(self.endpoint, name=self.name, publish_window=self.publish_window,
                          connect_timeout=self.connect_timeout)
        await conn.open()
        self._conn = conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    @property
    def conn(self) -> Connection:
        if self._conn is None:
            raise RuntimeError("client is not connected: use 'async with Client(...)'")
        self._conn.check()
        if self._conn.broken is not None:
            raise self._conn.broken
        return self._conn

    @property
    def connected(self) -> bool:
        """Whether the broker currently knows this client's session."""
        return self._conn is not None and self._conn.session.is_set()

    async def wait_connected(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until a session is open again after the broker was lost.

        The client probes a lost broker every heartbeat interval; when a broker
        answers on the endpoint again, a new session opens by itself, unconfirmed
        publishes are sent again, and consumers get their credit back.
        """
        if self._conn is None:
            raise RuntimeError("client is not connected: use 'async with Client(...)'")
        self._conn.check()
        async with asyncio.timeout(timeout):
            await self._conn.session.wait()

    @property
    def max_batch(self) -> int:
        w = self.conn.welcome
        return w.max_batch if w is not None else 1000

    async def publish(self, queue: str, body: bytes, *,
                      headers: dict[str, Any] | None = None, priority: int | None = None,
                      delay: float | None = None, eta: datetime | float | None = None,
                      ttl: float | None = None, time_limit: float | None = None,
                      max_attempts: int | None = None, tenant: str | None = None,
                      dedup_id: str | None = None) -> int:
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

        Durations are rounded up to whole milliseconds. A bad value raises
        ``zq.InvalidArgument`` before anything is sent. Queue names follow the rule
        of :mod:`zq.protocol.names` (``zq.InvalidQueueName`` otherwise), and
        dead-letter queues (``*.dlq``) take no publishes.
        """
        _check_publishable(queue)
        body = _check_body(body)
        headers = _check_headers(headers)
        conn = self.conn
        if (priority is None and delay is None and eta is None and ttl is None
                and time_limit is None and max_attempts is None and tenant is None
                and dedup_id is None):
            _check_fits(queue, body, headers, conn.limits)
            if conn.unconfirmed >= conn.publish_window:
                await conn.wait_window(1)
            fut = self.conn.publish(queue, body, headers)
        else:
            opts = make_options(priority, delay, eta, ttl, time_limit, max_attempts, tenant,
                                dedup_id)
            if opts is None:
                return await self.publish(queue, body, headers=headers)
            _check_fits(queue, body, headers, limits_with(conn.limits, options_size(opts)))
            if conn.unconfirmed >= conn.publish_window:
                await conn.wait_window(1)
            fut = self.conn.publish_opts(queue, body, headers, opts)
        result: int = await fut
        return result

    async def publish_many(self, queue: str, bodies: Iterable[bytes], *,
                           headers: Iterable[dict[str, Any] | None] | None = None,
                           priority: int | None = None, delay: float | None = None,
                           eta: datetime | float | None = None, ttl: float | None = None,
                           time_limit: float | None = None, max_attempts: int | None = None,
                           tenant: str | None = None) -> list[int]:
        """Publish many messages in as few frames as the broker allows; return their ids.

        The options, as for :meth:`publish`, apply to every message.
        """
        _check_publishable(queue)
        opts = None
        if (priority is not None or delay is not None or eta is not None or ttl is not None
                or time_limit is not None or max_attempts is not None or tenant is not None):
            opts = make_options(priority, delay, eta, ttl, time_limit, max_attempts, tenant)
        items = [_check_body(b) for b in bodies]
        hdrs = [_check_headers(h) for h in headers] if headers is not None else []
        if hdrs and len(hdrs) != len(items):
            raise ValueError(f"{len(hdrs)} headers for {len(items)} bodies")
        if not any(h is not None for h in hdrs):
            hdrs = []
        conn = self.conn
        limits = conn.limits if opts is None else limits_with(conn.limits, options_size(opts))
        qlen = len(queue.encode())
        lens = list(map(len, items))
        hsizes = [codec.header_size(h) for h in hdrs] if hdrs else None
        if hsizes is not None or not codec.fits_together(qlen, lens, limits):
            for i, body in enumerate(items):  # some message may be too big on its own
                _check_fits(queue, body, hdrs[i] if hdrs else None, limits)
        ends = codec.split(qlen, lens, hsizes, self.max_batch, limits)
        futs: list[asyncio.Future[Any]] = []
        start = 0
        for end in ends:
            chunk = items[start:end]
            await conn.wait_window(len(chunk))
            futs.append(conn.publish_frame(queue, chunk, hdrs[start:end] if hdrs else [],
                                           opts))
            start = end
        ids: list[int] = []
        for chunk_ids in await asyncio.gather(*futs):
            ids.extend(chunk_ids)
        return ids

    def consume(self, queue: str, *, prefetch: int = 100, auto_start: bool = True
                ) -> Consumer:
        """Messages from ``queue``, at most ``prefetch`` unacked at a time.

        With ``auto_start`` (the default) a message counts as started when the
        application takes it from the consumer; if this client dies, messages it
        received and had not started go back without counting an attempt. Without
        it, call :meth:`Message.mark_started` when work on a message begins.
        """
        check_queue_name(queue)
        if not isinstance(prefetch, int) or prefetch < 1:
            raise ValueError(f"prefetch must be a positive int, got {prefetch!r}")
        return Consumer(self.conn, queue, prefetch, auto_start=auto_start)

    async def stats(self) -> dict[str, Any]:
        """The broker's counters: totals, per queue, per connected peer."""
        return await self.conn.stats()

    # ------------------------------------------------------------ queue operations
    #
    # Each is one MANAGE request; the reply comes once its effects are stored.
    # A refusal raises the broker's error (zq.UnknownQueue, zq.InvalidArgument,
    # ...); a broker that goes away before answering raises zq.ConnectionLost.

    async def declare_queue(self, name: str, **settings: Any) -> dict[str, Any]:
        """Create queue ``name`` or change the given settings of it; others stay.

        Setting names are those of ``zq.settings.QueueSettings``: ``max_length``,
        ``overflow``, ``ttl``, ``max_attempts``, ``dlq``, ``dedup_window``,
        ``time_limit``, ``retry``, ``retry_delay``, ``retry_max_delay``,
        ``selection``, ``weights``, ``caps`` (durations in seconds). Returns the
        queue's effective settings.
        """
        check_queue_name(name)
        changes = {k.replace("-", "_"): v for k, v in settings.items()}
        from_map(changes)  # a bad name or value fails here, before anything is sent
        result = await self.conn.manage("declare", {"queue": name, "settings": changes})
        out: dict[str, Any] = result["settings"]
        return out

    async def queue_info(self, name: str) -> dict[str, Any]:
        """``{"queue", "settings", "stats", "dlq"}`` of queue ``name``."""
        _check_queue(name)
        return await self.conn.manage("info", {"queue": name})

    async def queues(self) -> dict[str, Any]:
        """Every queue's stats, by name (read a page of queues at a time)."""
        out: dict[str, Any] = {}
        after = ""
        while True:
            result = await self.conn.manage("list", {"after": after} if after else {})
            page: dict[str, Any] = result["queues"]
            out.update(page)
            if not result.get("more") or not page:
                return out
            after = max(page)

    async def pause_queue(self, name: str) -> None:
        """Stop delivering from ``name`` (publishes are still stored)."""
        _check_queue(name)
        await self.conn.manage("pause", {"queue": name})

    async def resume_queue(self, name: str) -> None:
        """Deliver from ``name`` again."""
        _check_queue(name)
        await self.conn.manage("resume", {"queue": name})

    async def purge_queue(self, name: str) -> int:
        """Delete the ready and delayed messages of ``name``; return how many."""
        _check_queue(name)
        result = await self.conn.manage("purge", {"queue": name})
        return int(result["purged"])

    async def delete_queue(self, name: str) -> int:
        """Remove ``name`` with its settings and all its messages; return how many."""
        _check_queue(name)
        result = await self.conn.manage("delete", {"queue": name})
        return int(result["deleted"])

    async def redrive(self, dlq: str, *, to: str | None = None, match: str | None = None,
                      since: datetime | float | None = None,
                      until: datetime | float | None = None, limit: int = 0) -> int:
        """Move dead letters from ``dlq`` back to the queue each died in (or ``to``).

        Their attempts start over. Filters: ``match`` (text in the reason),
        ``since`` / ``until`` (when they died: a datetime or epoch seconds),
        ``limit`` (most to move, 0 = all). Returns how many moved. A dead-letter
        queue larger than the broker's in-memory window is moved page by page.
        """
        _check_queue(dlq)
        args: dict[str, Any] = {"queue": dlq}
        if to is not None:
            check_publishable(to)  # back to work: never into a dead-letter queue
            args["to"] = to
        if match is not None:
            if not isinstance(match, str):
                raise InvalidArgument(f"match must be a str, got {match!r}")
            args["match"] = match
        if since is not None:
            args["since"] = _wall(since, "since")
        if until is not None:
            args["until"] = _wall(until, "until")
        if type(limit) is not int or not 0 <= limit <= MAX_COUNT:
            raise InvalidArgument(f"limit must be an int 0..{MAX_COUNT}, got {limit!r}")
        if limit:
            args["limit"] = limit
        moved = 0
        stuck_since: float | None = None
        left = -1
        loop = asyncio.get_running_loop()
        while True:
            result = await self.conn.manage("redrive", args)
            moved += int(result["moved"])
            if limit and moved >= limit:
                return moved
            if limit:
                args["limit"] = limit - moved
            # A dead-letter queue bigger than the broker's window keeps the rest on
            # disk; the broker pages it in after each call. Go on while that helps.
            now_left = int(result.get("left_on_disk", 0))
            if not now_left:
                return moved
            if result["moved"] or now_left != left:
                stuck_since = None
            elif stuck_since is None:
                stuck_since = loop.time()
            elif loop.time() - stuck_since > 5.0:
                return moved  # what is left does not come in (or does not match)
            left = now_left
            if not result["moved"]:
                await asyncio.sleep(0.05)

    async def peek(self, queue: str, limit: int = 10) -> list[dict[str, Any]]:
        """The first ``limit`` (1..100) ready messages of ``queue``, left in place.

        Each is ``{"id", "attempts", "headers", "body"}``; a dead letter's headers
        hold its ``zq-history``, ``zq-origin``, ``zq-reason`` and ``zq-dead-at``.
        """
        _check_queue(queue)
        if type(limit) is not int or not 1 <= limit <= 100:
            raise InvalidArgument(f"limit must be an int 1..100, got {limit!r}")
        result = await self.conn.manage("peek", {"queue": queue, "limit": limit})
        out: list[dict[str, Any]] = result["messages"]
        return out

    # ------------------------------------------------------------ schedules

    async def add_schedule(self, name: str, queue: str, body: bytes, *,
                           every: float | str | None = None, cron: str | None = None,
                           misfire: str = "once", headers: dict[str, Any] | None = None,
                           priority: int | None = None, ttl: float | None = None,
                           time_limit: float | None = None, max_attempts: int | None = None,
                           tenant: str | None = None) -> float:
        """Have the broker publish ``body`` to ``queue`` at every due time; return
        the first due time (wall-clock epoch seconds).

        Give exactly one of ``every`` (seconds, or a text like ``"10s"``, ``"5m"``,
        ``"1h"``, ``"500ms"``, ``"1h30m"``) or ``cron`` (five fields, UTC: minute
        hour day-of-month month day-of-week, e.g. ``"*/5 * * * *"``). The schedule
        lives in the broker's store and replaces one of the same name. Each due
        time fires exactly once; after the broker was down, ``misfire="once"``
        fires once at start for what was missed and ``"skip"`` waits for the next
        due time. Fired messages carry the headers ``zq-schedule`` (the name) and
        ``zq-due`` (the due time), besides ``headers``; the other options are those
        of :meth:`publish`.
        """
        _check_queue(queue)
        body = _check_body(body)
        opts = make_options(priority, None, None, ttl, time_limit, max_attempts, tenant)
        args = schedule_args(name, queue, body, _check_headers(headers), every, cron, misfire,
                             opts.to_map() if opts is not None else None)
        result = await self.conn.manage("schedule_add", args)
        return float(result["next_due"])

    async def schedules(self) -> list[dict[str, Any]]:
        """Every schedule: ``{"name", "queue", "every_ms", "cron", "misfire",
        "next_due", "fired", "last_fired", "headers", "options"}``."""
        result = await self.conn.manage("schedule_ls", {})
        out: list[dict[str, Any]] = result["schedules"]
        return out

    async def remove_schedule(self, name: str) -> bool:
        """Remove schedule ``name``; whether there was one. Messages it already
        published stay."""
        result = await self.conn.manage("schedule_rm", {"name": check_name(name)})
        return bool(result["removed"])

    # ------------------------------------------------------------ task outcomes

    async def complete(self, queue: str, id: int, attempt: int, ok: bool,
                       result: Any = None, error: dict[str, str] | None = None,
                       retry: bool = True, delay: float | None = None) -> str:
        """Settle delivery ``id`` (attempt ``attempt``) of ``queue`` with a task outcome.

        Prefer :meth:`Message.complete`, which also keeps the consumer's credit
        window full. Returns ``"succeeded"``, ``"failed"`` or ``"dead"``.
        """
        _check_queue(queue)
        args = complete_args(queue, id, attempt, ok, result, error, retry, delay)
        reply = await self.conn.manage("complete", args)
        return str(reply["state"])

    async def task_status(self, queue: str, id: int) -> dict[str, Any]:
        """What the broker knows of message ``id`` of ``queue``: ``{id, queue, state,
        attempt, history}`` and, by state, ``worker``, ``result`` or ``error``.

        ``state``: ready, delayed, running, succeeded, failed (will retry), dead or
        unknown (never published there, or its outcome expired or was not kept).
        """
        _check_queue(queue)
        return await self.conn.manage("status", {"queue": queue, "id": id})

    async def wait_result(self, queue: str, id: int,
                          timeout: float | None = None) -> dict[str, Any]:  # noqa: ASYNC109
        """Like :meth:`task_status`, returned once the state is final (succeeded, dead
        or unknown) or ``timeout`` seconds have passed (None: no limit)."""
        _check_queue(queue)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + _seconds(timeout, "timeout")
        while True:
            left = _WAIT_MAX if deadline is None else min(_WAIT_MAX, deadline - loop.time())
            ms = max(0, math.ceil(left * 1000))
            state = await self.conn.manage("wait", {"queue": queue, "id": id,
                                                    "timeout_ms": ms})
            if state.get("state") in ("succeeded", "dead", "unknown") or (
                    deadline is not None and loop.time() >= deadline):
                return state

    async def sync(self) -> None:
        """Return once the broker has handled and stored everything sent before.

        Errors for frames sent earlier (refused acks, for instance) have arrived
        by the time it returns.
        """
        await self.conn.manage("sync", {})
