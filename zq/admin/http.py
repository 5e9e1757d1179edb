"""The admin listener's HTTP/1.1 server: h11 parses and frames, asyncio streams carry.

GET and HEAD only, small requests (16 KiB of head, no body), keep-alive, an idle
timeout, a cap on connections, and a bearer token on everything but ``/health`` and
the dashboard's static files when one is configured. Handlers are plain functions
that read the process's state in the event loop's thread (no locks, no copies
across threads) and return a :class:`Reply`; one that raises gets a 500 and a log
line, and the listener goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import h11

log = logging.getLogger("zq.admin")

MAX_HEAD = 16 * 1024  # bytes of request line and headers
IDLE_TIMEOUT = 30.0  # seconds a connection may wait between requests
HEAD_DEADLINE = 10.0  # seconds from a request's first byte to the end of its head
WRITE_TIMEOUT = 10.0  # seconds a reply may wait for the client to take it
MAX_CONNECTIONS = 64
SECURITY_HEADERS = [
    # The dashboard loads nothing from elsewhere, and nothing may frame it.
    ("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; "
                                "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
]


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class Request:
    method: str
    path: str  # decoded, without the query
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names; the last of repeated ones


Handler = Callable[[Request], "Reply | Awaitable[Reply]"]


def json_reply(obj: Any, status: int = 200) -> Reply:
    return Reply(status, json.dumps(obj, default=_plain, separators=(",", ":")).encode())


def error_reply(status: int, code: str, message: str) -> Reply:
    return json_reply({"error": {"code": code, "message": message}}, status)


def literal_host(host: str) -> bool:
    """Whether a Host header names an IP address or localhost (or is absent: HTTP/1.0)."""
    if not host:
        return True
    name = host[1:].partition("]")[0] if host.startswith("[") else host.rpartition(":")[0]
    name = name or host
    if name.lower() == "localhost":
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _plain(v: Any) -> Any:
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v).decode("utf-8", "replace")
    if isinstance(v, set | frozenset | tuple):
        return list(v)
    return repr(v)


class _Conn:
    """One connection: its task, and since when it has been waiting for the client
    (idle between requests, or sending a request head; None while being answered)."""

    __slots__ = ("since", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.since: float | None = asyncio.get_running_loop().time()


class AdminServer:
    """Serves ``route(request)``; ``public(path)`` says which paths need no token."""

    def __init__(self, route: Handler, *, token: str = "",
                 public: Callable[[str], bool] = lambda path: False) -> None:
        self._route = route
        self._token = token.encode()
        self._public = public
        self._server: asyncio.Server | None = None
        self._conns: dict[asyncio.Task[Any], _Conn] = {}
        self.address = ""  # http://HOST:PORT once listening
        self.requests = 0
        self.evicted = 0  # slow connections closed to let a new one in

    async def start(self, host: str, port: int) -> str:
        self._server = await asyncio.start_server(self._accept, host, port,
                                                  limit=MAX_HEAD, reuse_address=True)
        sock = self._server.sockets[0].getsockname()
        shown = f"[{sock[0]}]" if ":" in sock[0] else sock[0]
        self.address = f"http://{shown}:{sock[1]}"
        return self.address

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        tasks = list(self._conns)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        if server is not None:
            await server.wait_closed()

    def _room(self) -> bool:
        """Whether a new connection may be served: under the cap, or by closing the
        connection that has waited for its client the longest (idle, or trickling a
        request head: nobody keeps the listener, and /health with it, by holding
        connections open)."""
        if len(self._conns) < MAX_CONNECTIONS:
            return True
        slow = [c for c in self._conns.values() if c.since is not None]
        if not slow:
            return False
        oldest = min(slow, key=lambda c: c.since or 0.0)
        oldest.since = None
        oldest.task.cancel()
        self.evicted += 1
        return True

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        task = asyncio.current_task()
        if task is None or not self._room():
            writer.close()
            return
        c = self._conns[task] = _Conn(task)
        try:
            await self._serve(reader, writer, c)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, h11.ProtocolError):
            pass  # the peer left, was too slow, or broke the protocol after a request
        except asyncio.CancelledError:
            pass  # evicted, or the listener is closing: this task ends here, quietly
        finally:
            self._conns.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     c: _Conn) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        while True:
            try:
                event = await self._next(conn, reader)
                if not isinstance(event, h11.Request):
                    return  # closed, or the peer went away between requests
                if not await self._body_read(conn, reader):
                    return  # a request body larger than any this listener reads
            except h11.RemoteProtocolError as exc:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await self._send(conn, writer, "GET",
                                     error_reply(exc.error_status_hint, "BAD_REQUEST", str(exc)))
                return
            c.since = None
            await self._send(conn, writer, event.method.decode("ascii", "replace"),
                             await self._answer(event))
            c.since = asyncio.get_running_loop().time()
            if conn.our_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _next(self, conn: h11.Connection, reader: asyncio.StreamReader,
                    idle: bool = True) -> Any:
        """The next h11 event, reading as it needs: the first byte of a request within
        IDLE_TIMEOUT (``idle``), the rest of its head (or its body) within
        HEAD_DEADLINE and MAX_HEAD bytes."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None if idle else loop.time() + HEAD_DEADLINE
        read = 0
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            if read >= MAX_HEAD:
                raise h11.RemoteProtocolError("request head too large", 431)
            if deadline is None:
                timeout = IDLE_TIMEOUT
            else:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    raise TimeoutError
            data = await asyncio.wait_for(reader.read(MAX_HEAD), timeout)
            if data and deadline is None:
                deadline = loop.time() + HEAD_DEADLINE
            read += len(data)
            conn.receive_data(data)

    async def _body_read(self, conn: h11.Connection, reader: asyncio.StreamReader) -> bool:
        """Read (and drop) the request's body, up to MAX_HEAD bytes: the connection can
        then carry the next request. False: larger, or the peer left."""
        seen = 0
        while True:
            event = await self._next(conn, reader, idle=False)
            if isinstance(event, h11.EndOfMessage):
                return True
            if not isinstance(event, h11.Data):
                return False
            seen += len(event.data)
            if seen > MAX_HEAD:
                return False

    async def _answer(self, event: h11.Request) -> Reply:
        self.requests += 1
        method = event.method.decode("ascii", "replace")
        if method not in ("GET", "HEAD"):
            return error_reply(405, "METHOD_NOT_ALLOWED", "the admin listener only reads: "
                                                          "GET or HEAD")
        target = urlsplit(event.target.decode("ascii", "replace"))
        path = unquote(target.path)
        headers = {k.decode("ascii", "replace").lower(): v.decode("latin-1")
                   for k, v in event.headers}
        if not self._token and not literal_host(headers.get("host", "")):
            # Without a token, a page of another site that points its name at this
            # address (DNS rebinding) must not read it: only IP literals and localhost.
            return error_reply(421, "MISDIRECTED", "without --admin-token this listener "
                                                   "answers to an IP address or localhost only")
        if self._token and not self._public(path) and not self._authorized(headers):
            return Reply(401, json.dumps({"error": {
                "code": "UNAUTHORIZED", "message": "this admin listener needs "
                "'Authorization: Bearer <token>' (the --admin-token file)"}}).encode(),
                headers=[("WWW-Authenticate", 'Bearer realm="zq"')])
        try:
            reply = self._route(Request(method, path, parse_qs(target.query), headers))
            return await reply if inspect.isawaitable(reply) else reply
        except Exception:
            log.exception("admin request %s %s failed", method, path[:200])
            return error_reply(500, "INTERNAL", "the handler failed; see the process's log")

    def _authorized(self, headers: dict[str, str]) -> bool:
        given = headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(),
                                                                  self._token)

    async def _send(self, conn: h11.Connection, writer: asyncio.StreamWriter, method: str,
                    reply: Reply) -> None:
        headers = [("Content-Type", reply.content_type),
                   ("Content-Length", str(len(reply.body))),
                   ("Cache-Control", "no-store"), *SECURITY_HEADERS, *reply.headers]
        out = conn.send(h11.Response(status_code=reply.status, headers=headers,
                                     reason=HTTPStatus(reply.status).phrase)) or b""
        if method != "HEAD" and reply.body:
            out += conn.send(h11.Data(data=reply.body)) or b""
        out += conn.send(h11.EndOfMessage()) or b""
        writer.write(out)
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)  # a client that never reads
