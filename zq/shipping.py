"""The broker's shipper: it carries the queues this broker moves to their new brokers
(PROTOCOL.md section 17.5). The decisions are the core's (``zq.core.moves``); this is
the I/O around them: one task per move, each with a session of its own at the target.

A move goes: ``begin`` (the target makes the queue), then batches of messages
(``ship``), each deleted here once the target's reply says it stored them, then
``done`` once nothing is left here and that is stored. Any failure (the target
down, a timeout, an error) is retried with the same batch after a pause; the
target stores each message once, whatever is sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import zmq

from zq.core.facade import Core
from zq.core.model import MoveOut, Msg
from zq.errors import ZqError, error_from_code
from zq.protocol import codec
from zq.protocol import frames as f
from zq.security.curve import ClientKeys
from zq.transport import fd, readable, recv_parts, send_parts

log = logging.getLogger("zq.broker")

BATCH = 1000  # messages per ship request
BATCH_BYTES = 8 * 1024 * 1024  # bodies and headers per ship request
TIMEOUT = 10.0  # seconds for one reply
PAUSE = 1.0  # seconds before trying again after a failure
IDLE = 0.02  # seconds between looks while consumers still hold messages


class LinkError(Exception):
    """The target did not answer (in time)."""


class PeerLink:
    """A client session with another broker on a DEALER socket: HELLO, then requests
    answered one at a time."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, name: str,
                 keys: ClientKeys | None = None) -> None:
        self.ctx = ctx
        self.keys = keys  # CURVE: this broker's own pair (its cluster shares it)
        self.endpoint = endpoint
        self.name = name
        self.sock: zmq.Socket[bytes] | None = None
        self.req = 0
        self.heartbeat = 1.0
        self._ready = asyncio.Event()

    async def open(self) -> None:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IDENTITY, b"zq-move-" + os.urandom(8).hex().encode())
        if self.keys is not None:
            self.keys.apply(sock)
        sock.connect(self.endpoint)
        self.sock = sock
        asyncio.get_running_loop().add_reader(fd(sock), self._ready.set)
        send_parts(sock, codec.encode(f.Hello(name=self.name, heartbeat_ms=1000)))
        w = await self._answer(lambda fr: isinstance(fr, f.Welcome), TIMEOUT)
        assert isinstance(w, f.Welcome)
        self.heartbeat = max(0.1, w.heartbeat_ms / 1000)

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(fd(sock))
            sock.close(linger=0)

    async def request(self, args: dict[str, Any], bodies: list[bytes] | None = None
                      ) -> dict[str, Any]:
        """MANAGE ``move_in`` with ``args``; its reply, or the error it got raised."""
        if self.sock is None:
            await self.open()
        assert self.sock is not None
        self.req += 1
        req = self.req
        send_parts(self.sock, codec.encode(f.Manage(req, "move_in", args, bodies or [])))
        frame = await self._answer(
            lambda fr: (isinstance(fr, f.ManageReply) and fr.req == req)
            or (isinstance(fr, f.Error) and fr.ref in (req, None)), TIMEOUT)
        if isinstance(frame, f.Error):
            raise error_from_code(frame.code, frame.text)
        assert isinstance(frame, f.ManageReply)
        return frame.result

    def beat(self) -> None:
        if self.sock is not None:
            send_parts(self.sock, codec.encode(f.Heartbeat()))

    async def _answer(self, wanted: Callable[[f.Frame], bool], within: float) -> f.Frame:
        sock = self.sock
        assert sock is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            while True:
                try:
                    parts = recv_parts(sock)
                except zmq.Again:
                    break
                frame = codec.decode(parts)
                if wanted(frame):
                    return frame
            left = deadline - loop.time()
            if left <= 0:
                raise LinkError(f"no answer from {self.endpoint} within {within:.0f} s")
            self._ready.clear()
            if readable(sock):
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, self.heartbeat)):
                    await self._ready.wait()
            self.beat()


class Shipper:
    """The tasks of this broker's outgoing moves (one per queue), owned and awaited here."""

    def __init__(self, core: Core, ctx: zmq.Context[zmq.Socket[bytes]], node: str,
                 wake: Callable[[], None], stored: Callable[[], Awaitable[None]],
                 keys: ClientKeys | None = None) -> None:
        self.core = core
        self.keys = keys
        self.ctx = ctx
        self.node = node
        self.wake = wake  # the broker's loop should run a pass (commit what was staged)
        self.stored = stored  # returns once everything staged so far is stored
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def poll(self) -> None:
        """Start a task for each move that needs one and has none."""
        for mv in self.core.outgoing_moves():
            if mv.name not in self.tasks:
                task = asyncio.get_running_loop().create_task(self._run(mv),
                                                              name=f"zq move {mv.name}")
                self.tasks[mv.name] = task
                task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        for name, t in list(self.tasks.items()):
            if t is task:
                del self.tasks[name]
        if not task.cancelled() and task.exception() is not None:
            log.error("move stopped (%s): %r", task.get_name(), task.exception())

    async def close(self) -> None:
        tasks = list(self.tasks.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t

    async def _run(self, mv: MoveOut) -> None:
        link = PeerLink(self.ctx, mv.endpoint, f"move {mv.name} from {self.node}")
        log.info("moving queue %s to broker %s at %s (%s)", mv.name, mv.to, mv.endpoint,
                 mv.phase)
        held: list[Msg] = []  # taken, not yet stored by the target: sent again as they are
        keys_sent: list[bool] = []  # the queue's dedup keys went (once per process)
        try:
            while not mv.announced:
                try:
                    await self._step(mv, link, held, keys_sent)
                except (LinkError, ZqError, zmq.ZMQError, ValueError) as exc:
                    mv.error = f"{type(exc).__name__}: {exc}"
                    log.warning("move of %s to %s: %s; trying again", mv.name, mv.to, exc)
                    link.close()
                    await asyncio.sleep(PAUSE)
                except Exception as exc:  # a bug: said loudly, and tried again
                    mv.error = f"{type(exc).__name__}: {exc}"
                    log.exception("move of %s to %s failed; trying again", mv.name, mv.to)
                    link.close()
                    await asyncio.sleep(PAUSE)
            log.info("queue %s moved to broker %s (%d messages)", mv.name, mv.to, mv.shipped)
        finally:
            link.close()

    async def _step(self, mv: MoveOut, link: PeerLink, held: list[Msg],
                    keys_sent: list[bool]) -> None:
        """One step of the move. ``held``: the batch taken and not yet stored by the
        target, kept (in place) across failures to be sent again as it is."""
        core = self.core
        base = {"queue": mv.name, "move": mv.id, "from": self.node}
        if mv.phase == "prepare":
            q = core.queues[mv.name]
            await link.request({**base, "phase": "begin", "settings": q.settings.to_map(),
                                "paused": q.paused})
            core.move_prepared(mv.name)
            self.wake()
            return
        if mv.phase == "done":
            await self.stored()  # every delete, and the record, before the target lists it
            await link.request({**base, "phase": "done"})
            core.move_announced(mv.name)
            self.wake()
            return
        if not keys_sent:  # every dedup key first (their messages may be gone)
            await link.request({**base, "phase": "ship", "messages": [],
                                "keys": core.move_keys(mv.name)})
            keys_sent.append(True)
            return
        if not held:
            held.extend(core.move_take(mv.name, BATCH, BATCH_BYTES))
            mv.entries = _entries(core, mv, held)
        if held:
            await link.request({**base, "phase": "ship", "messages": mv.entries},
                               [m.body for m in held])
            core.move_shipped(mv.name, held)
            held.clear()
            self.wake()
            return
        if not core.move_finish(mv.name):
            self.wake()  # page the backlog in, commit what is staged
            await asyncio.sleep(IDLE)
            link.beat()
        else:
            self.wake()


def _entries(core: Core, mv: MoveOut, msgs: list[Msg]) -> list[list[Any]]:
    """``[id, attempts, due, expires, headers, options, keys]`` of each message."""
    off = core.wall_offset
    out = []
    for m in msgs:
        o = m.opts
        opts = None
        if o is not None:
            opts = {k: v for k, v in (("priority", o.priority), ("tenant", o.tenant),
                                      ("max_attempts", o.max_attempts),
                                      ("time_limit_ms", o.time_limit_ms)) if v} or None
        d = mv.due.pop(m.id, 0.0)
        out.append([m.id, m.attempts, round(d + off, 6) if d else 0,
                    round(m.exp + off, 6) if m.exp else 0, m.headers, opts,
                    [[k, until] for k, until in mv.keys.pop(m.id, [])]])
    return out
