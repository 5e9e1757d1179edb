"""The requests of :class:`zq.Client` that are not publishing or consuming: queue
operations, schedules and task outcomes, one MANAGE request each."""

from __future__ import annotations

import asyncio
import math
from datetime import datetime
from typing import TYPE_CHECKING, Any

from zq.client.args import (
    check_body,
    check_headers,
    check_queue,
    complete_args,
    make_options,
    redrive_args,
    seconds,
)
from zq.client.schedules import check_name, schedule_args
from zq.errors import InvalidArgument
from zq.protocol.names import check_queue_name
from zq.settings import from_map

if TYPE_CHECKING:
    from zq.client.connection import Connection

_WAIT_MAX = 60.0  # seconds: the broker's bound on one MANAGE wait


class Operations:
    """Mixed into :class:`zq.Client`, which provides :attr:`conn`, :meth:`_manage`
    (a MANAGE request to the node that holds the queue it names) and :meth:`_sync`."""

    @property
    def conn(self) -> Connection:
        raise NotImplementedError

    async def _manage(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    async def _sync(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------ queue operations
    #
    # Each is one MANAGE request; the reply comes once its effects are stored.
    # A refusal raises the broker's error (zq.UnknownQueue, zq.InvalidArgument,
    # ...); a broker that goes away before answering raises zq.ConnectionLost.
    # In a cluster, one refused with MOVED goes to the broker named (three hops
    # at most), as a publish does.

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
        result = await self._manage("declare", {"queue": name, "settings": changes})
        out: dict[str, Any] = result["settings"]
        return out

    async def move_queue(self, name: str, to: str) -> dict[str, Any]:
        """Move queue ``name`` to broker ``to`` of the cluster (PROTOCOL.md section 17.5).

        Send it to the broker that holds the queue (a router forwards it there). The
        reply comes once the move is recorded; it goes on in the background: see
        :meth:`move_status` on the same broker. Returns the move's status.
        """
        check_queue(name)
        return await self._manage("move", {"queue": name, "to": to})

    async def move_status(self, name: str) -> dict[str, Any]:
        """Where the move of queue ``name`` from this broker stands: ``phase``
        (prepare, ship, done), ``announced`` (done and the target lists the queue),
        ``shipped``, ``left`` (messages still on this broker), ``error``."""
        check_queue(name)
        return await self._manage("move_status", {"queue": name})

    async def queue_info(self, name: str) -> dict[str, Any]:
        """``{"queue", "settings", "stats", "dlq"}`` of queue ``name``."""
        check_queue(name)
        return await self._manage("info", {"queue": name})

    async def queues(self) -> dict[str, Any]:
        """Every queue's stats, by name (read a page of queues at a time)."""
        out: dict[str, Any] = {}
        after = ""
        while True:
            result = await self._manage("list", {"after": after} if after else {})
            page: dict[str, Any] = result["queues"]
            out.update(page)
            if not result.get("more") or not page:
                return out
            after = max(page)

    async def pause_queue(self, name: str) -> None:
        """Stop delivering from ``name`` (publishes are still stored)."""
        check_queue(name)
        await self._manage("pause", {"queue": name})

    async def resume_queue(self, name: str) -> None:
        """Deliver from ``name`` again."""
        check_queue(name)
        await self._manage("resume", {"queue": name})

    async def purge_queue(self, name: str) -> int:
        """Delete the ready and delayed messages of ``name``; return how many."""
        check_queue(name)
        result = await self._manage("purge", {"queue": name})
        return int(result["purged"])

    async def delete_queue(self, name: str) -> int:
        """Remove ``name`` with its settings and all its messages; return how many."""
        check_queue(name)
        result = await self._manage("delete", {"queue": name})
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
        args = redrive_args(dlq, to, match, since, until, limit)
        moved = 0
        stuck_since: float | None = None
        left = -1
        loop = asyncio.get_running_loop()
        while True:
            result = await self._manage("redrive", args)
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
        check_queue(queue)
        if type(limit) is not int or not 1 <= limit <= 100:
            raise InvalidArgument(f"limit must be an int 1..100, got {limit!r}")
        result = await self._manage("peek", {"queue": queue, "limit": limit})
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
        check_queue(queue)
        body = check_body(body)
        opts = make_options(priority, None, None, ttl, time_limit, max_attempts, tenant)
        args = schedule_args(name, queue, body, check_headers(headers), every, cron, misfire,
                             opts.to_map() if opts is not None else None)
        result = await self._manage("schedule_add", args)
        return float(result["next_due"])

    async def schedules(self) -> list[dict[str, Any]]:
        """Every schedule: ``{"name", "queue", "every_ms", "cron", "misfire",
        "next_due", "fired", "last_fired", "headers", "options"}``."""
        result = await self._manage("schedule_ls", {})
        out: list[dict[str, Any]] = result["schedules"]
        return out

    async def remove_schedule(self, name: str) -> bool:
        """Remove schedule ``name``; whether there was one. Messages it already
        published stay."""
        result = await self._manage("schedule_rm", {"name": check_name(name)})
        return bool(result["removed"])

    # ------------------------------------------------------------ task outcomes

    async def complete(self, queue: str, id: int, attempt: int, ok: bool,
                       result: Any = None, error: dict[str, str] | None = None,
                       retry: bool = True, delay: float | None = None) -> str:
        """Settle delivery ``id`` (attempt ``attempt``) of ``queue`` with a task outcome.

        Prefer :meth:`Message.complete`, which also keeps the consumer's credit
        window full. Returns ``"succeeded"``, ``"failed"`` or ``"dead"``.
        """
        check_queue(queue)
        args = complete_args(queue, id, attempt, ok, result, error, retry, delay)
        reply = await self._manage("complete", args)
        return str(reply["state"])

    async def task_status(self, queue: str, id: int) -> dict[str, Any]:
        """What the broker knows of message ``id`` of ``queue``: ``{id, queue, state,
        attempt, history}`` and, by state, ``worker``, ``result`` or ``error``.

        ``state``: ready, delayed, running, succeeded, failed (will retry), dead or
        unknown (never published there, or its outcome expired or was not kept).
        """
        check_queue(queue)
        return await self._manage("status", {"queue": queue, "id": id})

    async def explain(self, message_id: int) -> dict[str, Any]:
        """Why message ``message_id`` (an id :meth:`publish` returned) is where it is:
        ``{id, state, reason, ...}``, ``reason`` being a sentence or two for people.

        ``state``: delayed, ready (with ``why``: dispatching, no_consumers, paused,
        consumers_at_credit_limit, tenant_at_cap, on_disk, ...), in_flight,
        committing, replicating, dead or not_found. Asked of the main node: ids are
        numbered per broker (PROTOCOL.md section 13.6).
        """
        if type(message_id) is not int or not 0 <= message_id < 1 << 63:
            raise InvalidArgument(f"message_id must be an unsigned integer, got "
                                  f"{message_id!r:.40}")
        return await self._manage("explain", {"id": message_id})

    async def wait_result(self, queue: str, id: int,
                          timeout: float | None = None) -> dict[str, Any]:  # noqa: ASYNC109
        """Like :meth:`task_status`, returned once the state is final (succeeded, dead
        or unknown) or ``timeout`` seconds have passed (None: no limit)."""
        check_queue(queue)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + seconds(timeout, "timeout")
        while True:
            left = _WAIT_MAX if deadline is None else min(_WAIT_MAX, deadline - loop.time())
            ms = max(0, math.ceil(left * 1000))
            state = await self._manage("wait", {"queue": queue, "id": id,
                                                    "timeout_ms": ms})
            if state.get("state") in ("succeeded", "dead", "unknown") or (
                    deadline is not None and loop.time() >= deadline):
                return state

    async def sync(self) -> None:
        """Return once the broker has handled and stored everything sent before
        (each broker this client talks to, in a cluster).

        Errors for frames sent earlier (refused acks, for instance) have arrived
        by the time it returns.
        """
        await self._sync()
