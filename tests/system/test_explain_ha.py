"""`zq explain` of a message stored but not yet confirmed, on real processes: a replicated
broker (docs/HA.md) whose primary waits for its paused standby ("replicating"), and a
commit held open ("committing"). tests/unit/test_explain.py covers both on the core alone.

How each situation is held open, deterministically:

* replicating: the standby is stopped (SIGSTOP) after the first publish is confirmed;
  the second is committed on the primary and waits for the standby's ack. Plain
  (not --ha-strict) with a long --ha-liveness: what bounds the wait is the primary's
  liveness timer, in both modes: after --ha-liveness of silence it drops the standby
  and confirms alone, or with --ha-strict answers the waiting publish UNAVAILABLE
  (zq/ha/primary.py, ``_on_timer``): strict would end the situation the same way, only
  with an error. --liveness is raised too: the replication socket drops a peer silent
  for --heartbeat x --liveness (ZeroMQ heartbeats, zq/security/guard.py), and a
  standby that reconnects gets a new routing id whose acks the primary ignores until
  it names its position again, after --ha-liveness: the pause must stay shorter than
  both for SIGCONT to release the publish.
* committing: another connection holds SQLite's write lock (BEGIN IMMEDIATE) on the
  primary's database while a batch of more than 64 rows is published: too big to be
  committed on the loop's thread (SqliteStore.commit_now), it is committed by a task
  on the store's thread, which waits for the lock in SQLite's busy handler (5 s)
  while the loop goes on answering. A publish that arrives meanwhile waits for the
  next commit. The lock is released well within the 5 s (else the commit fails and
  the publishes are refused); --checkpoint-interval keeps the broker's upkeep, which
  writes too, out of the way.

explain's reply goes out at once (MANAGE operations in ``at_once``), not after the next
commit as other replies: it would otherwise wait behind the very batch it describes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

import zq
from tests.etcd import Etcd
from tests.helpers import eventually
from tests.procs import ROOT
from tests.system.ha_helpers import HaPair

T = TypeVar("T")
Reply = dict[str, Any]

TTL = 30  # the leader lease: --ha-liveness may not exceed it
# --ha-liveness 30 s, and ZeroMQ heartbeats of 0.2 s (HaPair) x 100 = 20 s: a paused
# standby stays in sync, and connected, for 20 s.
FLAGS = ("--ha-liveness", "30", "--liveness", "100", "--checkpoint-interval", "3600")
PAUSE_MAX = 12.0  # seconds from SIGSTOP to SIGCONT at most, well within those 20 s
LOCK_MAX = 3.0  # seconds the write lock is held at most, within SQLite's 5 s busy timeout
CONFIRM = 20.0  # seconds for a confirm once nothing holds it back


class NoAnswer(AssertionError):
    """``explain`` did not answer while the situation it should describe held."""


pytestmark = pytest.mark.timeout(120)



async def explain_cli(endpoint: str, mid: int) -> Reply:
    """``zq explain MID --json``, as a user types it; the process is killed if the
    caller stops waiting for it."""
    env = dict(os.environ)
    env.pop("ZQ_ENDPOINT", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "zq", "explain", str(mid), "--json", "--endpoint", endpoint,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env, cwd=str(ROOT))
    try:
        out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    reply: Reply = json.loads(out)
    assert reply["id"] == mid, reply
    return reply


@contextlib.asynccontextmanager
async def running(aw: Awaitable[T]) -> AsyncIterator[asyncio.Task[T]]:
    """``aw`` as a task owned by the block: cancelled if still running at its end, and
    awaited either way."""
    task = asyncio.ensure_future(aw)
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


class Poll:
    """Ask ``explain`` again and again until its answer passes ``want``, for at most
    ``within`` seconds. An ask unanswered when the time is up is kept: its answer may
    come later (:meth:`late`); the block that owns the poll ends it (:meth:`close`)."""

    def __init__(self, ask: Callable[[], Awaitable[Reply]], want: Callable[[Reply], bool],
                 what: str) -> None:
        self.ask = ask
        self.want = want
        self.what = what
        self.reply: Reply | None = None
        self.waited = 0.0  # seconds the unanswered ask had waited
        self._unanswered: asyncio.Task[Reply] | None = None

    async def run(self, within: float) -> Reply | None:
        """The first answer that passes, or None if an ask was left unanswered."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            asked = loop.time()
            task = asyncio.ensure_future(self.ask())
            done, _ = await asyncio.wait({task}, timeout=max(0.0, deadline - asked))
            if not done:
                self._unanswered, self.waited = task, loop.time() - asked
                return None
            reply = task.result()
            if self.want(reply):
                self.reply = reply
                return reply
            if loop.time() > deadline:
                raise AssertionError(f"explain never said {self.what} within {within} s; "
                                     f"last: {reply}")
            await asyncio.sleep(0.05)  # (a poll's step)

    async def late(self, timeout: float) -> str:
        """What the unanswered ask got in the end, for the failure's message."""
        if self._unanswered is None:
            return "-"
        try:
            return repr(await asyncio.wait_for(asyncio.shield(self._unanswered), timeout))
        except TimeoutError:
            return f"no answer in {timeout} s more either"

    def check(self, situation: str, late: str) -> Reply:
        """The answer that passed; else NoAnswer, with what came late."""
        if self.reply is None:
            raise NoAnswer(f"explain gave no answer in {self.waited:.1f} s {situation}, when "
                           f"it should have said {self.what}; its answer came only once that "
                           f"was over: {late}")
        return self.reply

    async def close(self) -> None:
        task, self._unanswered = self._unanswered, None
        if task is not None:
            async with running(task):
                pass


async def test_a_publish_waiting_for_the_paused_standby_is_replicating(
        tmp_path: Path, etcd: Etcd) -> None:
    pair = HaPair(tmp_path, etcd, *FLAGS, ttl=TTL)
    paused = False
    try:
        await pair.start_both()
        assert await pair.leader() == "n0"
        primary = pair.endpoints[0]
        async with zq.Client(primary, name="producer", connect_timeout=30) as c:
            n = await c.publish("q", b"confirmed")
            assert (await explain_cli(primary, n))["state"] == "ready"
            poll = Poll(lambda: explain_cli(primary, n + 1),
                        lambda r: r["state"] == "replicating", "'replicating'")
            loop = asyncio.get_running_loop()
            pair.kill(1, signal.SIGSTOP)
            paused, stopped = True, loop.time()
            async with running(c.publish("q", b"waiting")) as publishing:
                try:
                    await eventually(lambda: b"waiting" in pair.bodies(0),
                                     "the second message stored on the primary", 5, 0.02)
                    await poll.run(stopped + PAUSE_MAX - loop.time())
                    unconfirmed = not publishing.done()
                finally:
                    pair.kill(1, signal.SIGCONT)
                    paused = False
                try:
                    # The standby applies the batch and acks it: the publish is confirmed.
                    assert await asyncio.wait_for(publishing, CONFIRM) == n + 1
                    late = await poll.late(CONFIRM)
                finally:
                    await poll.close()
            ready = await explain_cli(primary, n + 1)
            assert (ready["state"], ready["why"], ready["queue"]) == (
                "ready", "no_consumers", "q"), ready
            never = await explain_cli(primary, n + 5)
            assert (never["state"], never["never_issued"]) == ("not_found", True), never
            reply = poll.check(f"about message {n + 1} while the standby was paused (stored "
                               f"on the primary, its publish not confirmed)", late)
            assert unconfirmed, "the publish was confirmed while the standby was paused"
            assert reply["queue"] == "q", reply
            assert "standby" in reply["reason"], reply
    finally:
        if paused:
            pair.kill(1, signal.SIGCONT)
        await pair.stop()


@contextlib.contextmanager
def write_lock(db: Path) -> Iterator[None]:
    """Hold SQLite's write lock on ``db`` (BEGIN IMMEDIATE), writing nothing."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=5)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()  # (closing also ends the transaction)


async def test_publishes_waiting_for_a_commit_held_open_are_committing(
        tmp_path: Path, etcd: Etcd) -> None:
    pair = HaPair(tmp_path, etcd, *FLAGS, ttl=TTL)
    try:
        await pair.start_both()
        assert await pair.leader() == "n0"
        async with zq.Client(pair.endpoints[0], name="producer", connect_timeout=30) as c:
            n = await c.publish("q", b"confirmed")
            first, count = n + 1, 100  # > 64 rows: committed on the store's thread
            under_way = Poll(lambda: c.explain(first), lambda r: r["state"] == "committing"
                             and "commit under way" in r["reason"],
                             "'committing' (the commit under way)")
            next_one = Poll(lambda: c.explain(first + count), lambda r: r["state"] ==
                            "committing" and "next commit" in r["reason"],
                            "'committing' (the next commit)")
            loop = asyncio.get_running_loop()
            single: asyncio.Task[int] | None = None
            async with contextlib.AsyncExitStack() as owned:
                owned.push_async_callback(under_way.close)
                owned.push_async_callback(next_one.close)
                with write_lock(pair.data(0) / "zq.db"):
                    locked = loop.time()
                    batch = await owned.enter_async_context(running(
                        c.publish_many("q", [b"m%d" % i for i in range(count)])))
                    if await under_way.run(LOCK_MAX / 2) is not None:
                        # The batch's commit is under way: a publish now waits for the next.
                        single = await owned.enter_async_context(running(
                            c.publish("q", b"next")))
                        await next_one.run(locked + LOCK_MAX - loop.time())
                    unconfirmed = not batch.done()
                    held = loop.time() - locked
                # The lock is released: the commit goes on, then the next.
                assert held < 5, f"the write lock was held {held:.1f} s (SQLite waits 5 s)"
                ids = await asyncio.wait_for(batch, CONFIRM)
                assert ids == list(range(first, first + count))
                if single is not None:
                    assert await asyncio.wait_for(single, CONFIRM) == first + count
                late = await under_way.late(CONFIRM)
                late_next = await next_one.late(CONFIRM)
            ready = await c.explain(first)
            assert (ready["state"], ready["why"]) == ("ready", "no_consumers"), ready
            under_way.check(f"about message {first} while the commit of its batch was held "
                            f"open", late)
            assert unconfirmed, "the batch was confirmed while its commit was held open"
            next_one.check(f"about message {first + count}, published while that commit was "
                           f"under way", late_next)
    finally:
        await pair.stop()
