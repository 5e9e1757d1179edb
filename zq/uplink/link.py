"""The uplink's session with the centre: one DEALER socket at a time, in the broker's loop.

The broker calls :meth:`Uplink.pump` in every pass: while the session is up and the
frames in flight leave room, it takes whole runs of the forwarded queues from the core
(``zq.core.uplink``) and sends each as a PUBLISH whose seq is the run's first id. The
socket's descriptor wakes :meth:`Uplink._readable`, which reads without waiting:
a CONFIRM deletes its runs here (the broker's next commit stores that), an ERROR
either sends its frame again later or, for a refusal that cannot pass, dead-letters
its messages here.

One task (:meth:`Uplink.run`) keeps the session: HELLO with the producer id, then
heartbeats both ways. Silence past the liveness, a BYE, or a frame unanswered for
too long ends it; a new one starts on the next endpoint (all of them in turn, with a
pause growing to 5 s) with a new socket, and sends every frame in flight again first.
The centre knows each of those by producer id and seq and stores none of them twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import zmq

from zq.core.facade import Core
from zq.core.uplink import Run
from zq.errors import ZqError, error_from_code
from zq.protocol import codec
from zq.protocol import frames as f
from zq.security.curve import ClientKeys
from zq.transport import fd, readable, recv_parts, send_parts
from zq.uplink.flight import Flight, Sent
from zq.uplink.identity import Identity

log = logging.getLogger("zq.uplink")

HEARTBEAT = 1.0  # seconds between our heartbeats (the centre says its own in WELCOME)
HELLO_TIMEOUT = 5.0  # seconds for a WELCOME
PAUSE_FIRST, PAUSE_MOST = 0.1, 5.0  # between failed sessions, doubling
# Errors after which the session is not to be used: a new one starts (and resends all).
SESSION_OVER = frozenset({"SESSION_UNKNOWN", "PROTOCOL_VIOLATION", "MALFORMED_FRAME",
                          "UNSUPPORTED_VERSION", "UNKNOWN_OPCODE"})
MAX_SILENCE = 60.0  # seconds of silence that end a session, whatever WELCOME says
OVERDUE = 15.0  # default seconds a frame may wait for its answer (--uplink-timeout)
ELSEWHERE = 5  # UNAVAILABLE this many times in a row (about 8 s): try another endpoint


class Uplink:
    """The edge broker's producer session with the centre (see the module's doc)."""

    def __init__(self, core: Core, ctx: zmq.Context[zmq.Socket[bytes]], endpoints: list[str],
                 identity: Identity, wake: Callable[[], None], keys: ClientKeys | None = None,
                 timeout: float = OVERDUE) -> None:
        self.core = core
        self.ctx = ctx
        self.endpoints = endpoints
        self.identity = identity
        self.producer = identity.producer
        self.wake = wake  # the broker's loop should run a pass (commit the deletes)
        self.keys = keys
        self.timeout = timeout  # seconds a frame may wait for its answer (--uplink-timeout)
        self.flight = Flight()
        self.sock: zmq.Socket[bytes] | None = None
        self.state = "connecting"  # "up" while a session serves; "down" between tries
        self.endpoint = ""
        self.since = time.monotonic()
        self.last_error = ""
        self.next_endpoint = ""  # one a refusal of HELLO named, tried before the others
        self._trying = ""  # the endpoint of the session being opened
        self.liveness = 3.0  # seconds of silence that end a session (from WELCOME)
        self.heard = 0.0  # when the centre was last heard
        self.said = 0.0  # when we last sent anything
        self.counters = dict.fromkeys(("sessions", "frames_sent", "frames_resent",
                                       "confirmed", "refused", "retried", "split"), 0)
        self._welcome: asyncio.Future[f.Welcome] | None = None
        self._ended: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ the broker's side

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="zq uplink")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        self._close_socket()
        self.identity.save(time.monotonic(), force=True)

    def pump(self, now: float) -> None:
        """Send what room in flight allows (called in every pass of the broker's loop)."""
        if self.state != "up" or self.sock is None:
            return
        n, size = self.flight.room()
        if n <= 0 or size <= 0:
            return
        runs = self.core.uplink_take(n, size)
        for run in runs:
            self._send(self.flight.add(run, self._encode(run, now), now))
        self.counters["frames_sent"] += len(runs)
        if runs:
            self.identity.sent(max(r.msgs[-1].id for r in runs))
            self._rearm()

    def _rearm(self) -> None:
        """Sending can swallow the descriptor's edge: read now if something waits."""
        sock = self.sock
        if sock is not None and readable(sock):
            asyncio.get_running_loop().call_soon(self._readable)

    def stats(self, now: float) -> dict[str, Any]:
        """The uplink's state for STATS and the metrics."""
        back = self.core.uplink_backlog(now)
        in_flight = self.flight.messages
        oldest = min((t for t in (back["oldest"], self.flight.oldest()) if t), default=0.0)
        return {"state": self.state, "up": int(self.state == "up"), "endpoint": self.endpoint,
                "state_s": round(now - self.since, 3), "endpoints": list(self.endpoints),
                "backlog": back["backlog"] + in_flight, "waiting": back["backlog"],
                "in_flight": in_flight, "in_flight_frames": len(self.flight),
                "oldest_age": round(now - oldest, 3) if oldest else 0.0,
                "queues": back["queues"], "last_error": self.last_error,
                **self.counters}

    # ------------------------------------------------------------ frames

    def _encode(self, run: Run, now: float) -> list[bytes]:
        msgs = run.msgs
        headers = [m.headers for m in msgs] if any(m.headers for m in msgs) else []
        frame = f.Publish(run.q.name, run.seq, [m.body for m in msgs], headers,
                          self.core.uplink_options(run, now))
        return codec.encode(frame)

    def _send(self, s: Sent) -> None:
        sock = self.sock
        if sock is None:
            return
        try:
            send_parts(sock, s.parts, zmq.NOBLOCK)
            self.said = time.monotonic()
        except zmq.ZMQError:  # full or no peer: the session's checks send it again
            pass

    def _readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        now = time.monotonic()
        confirmed = False
        for _ in range(10_000):
            try:
                parts = recv_parts(sock)
            except zmq.ZMQError:
                break
            self.heard = now
            try:
                frame = codec.decode(parts)
            except ZqError as exc:
                log.warning("uplink: a frame from %s could not be read: %s", self.endpoint, exc)
                continue
            confirmed = self._on_frame(frame, now) or confirmed
        if confirmed:
            self.pump(now)
            self.wake()
        self._rearm()

    def _on_frame(self, frame: Any, now: float) -> bool:
        if isinstance(frame, f.Confirm):
            return self._confirmed(frame)
        if isinstance(frame, f.Error):
            self._error(frame, now)
        elif isinstance(frame, f.Welcome):
            if self._welcome is not None and not self._welcome.done():
                self._welcome.set_result(frame)
        elif isinstance(frame, f.Bye):
            self.last_error = f"the centre ended the session: {frame.reason}"
            if self._ended is not None:
                self._ended.set()
        return False

    def _confirmed(self, frame: f.Confirm) -> bool:
        core, flight = self.core, self.flight
        done = False
        for seq, _first, count in frame.entries:
            s = flight.confirmed(seq, count)
            if s is None and seq in flight.sent:
                log.error("uplink: the centre confirmed frame %d with %d message(s), not "
                          "%d: not taken as stored (is another edge using this data "
                          "folder's uplink-id?)", seq, count, len(flight.sent[seq].run.msgs))
            if s is not None:
                core.uplink_stored(s.run)
                self.counters["confirmed"] += len(s.run.msgs)
                done = True
        return done

    def _error(self, err: f.Error, now: float) -> None:
        ended = self._ended
        if err.name in SESSION_OVER:  # every frame of the session says so: said once
            if ended is not None and not ended.is_set():
                self.last_error = f"{err.name}: {err.text}"
                log.warning("uplink: the centre says %s: %s", err.name, err.text)
                ended.set()
            return
        if err.op == f.HELLO:  # a standby (HA), a key refused, too many sessions
            if self._welcome is not None and not self._welcome.done():
                self._welcome.set_exception(error_from_code(err.code, err.text))
            primary = (err.info or {}).get("endpoint")
            if primary in self.endpoints and primary != self._trying:
                self.next_endpoint = primary  # the primary a standby names, if it is ours
            return
        if err.op != f.PUBLISH or type(err.ref) is not int:
            self.last_error = f"{err.name}: {err.text}"
            log.warning("uplink: the centre says %s: %s", err.name, err.text)
            return
        hit = self.flight.refused(err.ref, err.name, now)
        if hit is None:
            return
        final, s = hit
        q = s.run.q.name
        if final and err.name == "FRAME_TOO_LARGE" and len(s.run.msgs) > 1:
            for half in s.run.halves():  # the centre's limits are smaller than ours
                self._send(self.flight.add(half, self._encode(half, now), now))
            self.counters["split"] += 1
            return
        if final:
            self.counters["refused"] += len(s.run.msgs)
            log.error("uplink: the centre refused %d message(s) of queue %s for good (%s: %s);"
                      " they are dead here", len(s.run.msgs), q, err.name, err.text)
            self.core.uplink_refused(s.run, f"{err.name}: {err.text}", now)
            self.wake()
        else:
            self.counters["retried"] += 1
            self.last_error = f"{err.name}: {err.text}"
            if s.tries == 1 or s.tries % 10 == 0:
                log.warning("uplink: %d message(s) of queue %s not stored by the centre "
                            "(%s: %s); sending them again", len(s.run.msgs), q, err.name,
                            err.text)

    # ------------------------------------------------------------ the session

    async def run(self) -> None:
        """Sessions, one after another, for as long as the broker serves."""
        pause, i = PAUSE_FIRST, 0
        while True:
            endpoint = self.next_endpoint or self.endpoints[i % len(self.endpoints)]
            self.next_endpoint, self._trying = "", endpoint
            i += 1
            try:
                await self._session(endpoint)
                pause = PAUSE_FIRST  # it was up: the next try goes at once
            except TimeoutError:
                if self.state != "up":
                    self.last_error = f"{endpoint}: no WELCOME within {HELLO_TIMEOUT:.0f} s"
            except (OSError, zmq.ZMQError, ZqError) as exc:
                self.last_error = f"{endpoint}: {exc}"
            finally:
                self._close_socket()
            if self.state != "down":
                self.state, self.since = "down", time.monotonic()
                log.warning("uplink to %s down (%s); %d message(s) wait here", endpoint,
                            self.last_error or "session ended", self.flight.messages)
            await asyncio.sleep(pause)
            pause = min(PAUSE_MOST, pause * 2)

    async def _session(self, endpoint: str) -> None:
        loop = asyncio.get_running_loop()
        self._open(endpoint, loop)
        self._welcome = loop.create_future()
        self._ended = asyncio.Event()
        self._hello()
        async with asyncio.timeout(HELLO_TIMEOUT):
            w = await self._welcome
        if w.broker == self.core.broker_id:
            raise ZqError(f"{endpoint} is this broker itself, not the centre")
        self.liveness = min(MAX_SILENCE, max(1.0, w.heartbeat_ms / 1000 * max(1, w.liveness)))
        now = time.monotonic()
        self.heard = now
        self.state, self.since, self.endpoint, self.last_error = "up", now, endpoint, ""
        self.counters["sessions"] += 1
        log.info("uplink to %s up (broker %s)", endpoint, w.broker)
        again = self.flight.everything(now)
        for s in again:
            self._send(s)
        self.counters["frames_resent"] += len(again)
        self.pump(now)
        self._rearm()
        self.wake()
        await self._watch()

    async def _watch(self) -> None:
        """Heartbeats, refused frames sent again, and the checks that end a session."""
        ended = self._ended
        assert ended is not None
        while not ended.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(HEARTBEAT, self.liveness / 3)):
                    await ended.wait()
            now = time.monotonic()
            if now - self.heard > self.liveness:
                self.last_error = f"no word from {self.endpoint} for {now - self.heard:.1f} s"
                return
            if self.flight.overdue(now, self.timeout):
                self.last_error = f"frames unanswered by {self.endpoint} for {self.timeout:g} s"
                return
            if len(self.endpoints) > 1 and self.flight.refused_since("UNAVAILABLE", ELSEWHERE):
                self.last_error = (f"{self.endpoint} keeps answering UNAVAILABLE: trying "
                                   f"another endpoint")
                return
            for s in self.flight.due(now):
                self._send(s)
            self.identity.save(now)
            if now - self.said >= HEARTBEAT and self.sock is not None:
                with contextlib.suppress(zmq.ZMQError):
                    send_parts(self.sock, codec.encode(f.Heartbeat()), zmq.NOBLOCK)
                    self.said = now
            self.pump(now)
            self._rearm()

    def _open(self, endpoint: str, loop: asyncio.AbstractEventLoop) -> None:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 4 * self.flight.max_frames)
        sock.setsockopt(zmq.IDENTITY, b"zq-uplink-" + os.urandom(8).hex().encode())
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        if self.keys is not None:
            self.keys.apply(sock)
        sock.connect(endpoint)
        self.sock = sock
        loop.add_reader(fd(sock), self._readable)

    def _hello(self) -> None:
        assert self.sock is not None
        hello = f.Hello(name=f"uplink {self.producer.decode(errors='replace')}",
                        heartbeat_ms=int(HEARTBEAT * 1000), producer=self.producer)
        send_parts(self.sock, codec.encode(hello), zmq.NOBLOCK)  # queued until connected
        self.said = time.monotonic()

    def _close_socket(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(fd(sock))
            sock.close(linger=0)
        if self._welcome is not None and not self._welcome.done():
            self._welcome.cancel()

