"""The admin listener's paths: the dashboard's files, ``/metrics``, ``/health`` and the
JSON API, for a broker or a router (each gives its own table of JSON views).
"""

from __future__ import annotations

import asyncio
import importlib.resources
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from zq.admin.http import Reply, Request, error_reply, json_reply

STATIC = {  # the dashboard: every file it loads ships in the package (zq/admin/web)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
    "/favicon.ico": ("favicon.svg", "image/svg+xml"),
}
PUBLIC = frozenset({*STATIC, "/health"})
METRICS_TTL = 1.0  # seconds one render of /metrics is served for
EXPLAINS_PER_S = 20
_ITEM = re.compile(r"^/api/queues/(?P<name>.+)$")
_EXPLAIN = re.compile(r"^/api/messages/(?P<id>[^/]+)/explain$")

View = Callable[[], Any]


def _static(name: str) -> bytes:
    return importlib.resources.files("zq.admin").joinpath("web", name).read_bytes()


class Routes:
    """``views``: JSON path -> function of no argument; ``queue(name)`` and
    ``explain(id)``: the two paths with a parameter (None: not served here);
    ``metrics()``: the Prometheus text (a coroutine: it formats in a thread);
    ``health()``: (ready, details)."""

    def __init__(self, views: dict[str, View], *, metrics: Callable[[], Awaitable[bytes]],
                 health: Callable[[], tuple[bool, dict[str, Any]]],
                 queue: Callable[[str], Any] | None = None,
                 explain: Callable[[int], Any] | None = None) -> None:
        self.views = views
        self._render = metrics
        self.health = health
        self.queue = queue
        self.explain = explain
        # One render of /metrics serves every scrape within METRICS_TTL, and one runs at
        # a time: many scrapers cost the broker what one does.
        self._metrics: tuple[float, bytes] | None = None
        self._rendering = asyncio.Lock()
        self._explains: deque[float] = deque()  # when the recent explains were asked

    async def metrics(self) -> bytes:
        async with self._rendering:
            now = time.monotonic()
            if self._metrics is None or now - self._metrics[0] >= METRICS_TTL:
                self._metrics = (now, await self._render())
            return self._metrics[1]

    def _explain_allowed(self) -> bool:
        """At most EXPLAINS_PER_S explains a second: each scans the queues in the loop."""
        now = time.monotonic()
        recent = self._explains
        while recent and now - recent[0] >= 1.0:
            recent.popleft()
        if len(recent) >= EXPLAINS_PER_S:
            return False
        recent.append(now)
        return True

    async def __call__(self, req: Request) -> Reply:
        path = req.path
        if path in STATIC:
            name, kind = STATIC[path]
            return Reply(200, _static(name), kind)
        if path == "/health":
            ready, details = self.health()
            return json_reply({"status": "ok" if ready else "starting", **details},
                              200 if ready else 503)
        ready, _ = self.health()
        if not ready:  # recovering: figures would be wrong, and explain would mislead
            return error_reply(503, "STARTING", "still recovering the store; try again")
        if path == "/metrics":
            return Reply(200, await self.metrics(), CONTENT_TYPE_LATEST)
        view = self.views.get(path)
        if view is not None:
            return json_reply(view())
        return self._item(path)

    def _item(self, path: str) -> Reply:
        m = _ITEM.match(path)
        if m is not None and self.queue is not None:
            found = self.queue(m["name"])
            if found is None:
                return error_reply(404, "UNKNOWN_QUEUE", f"no queue {m['name'][:200]!r} here")
            return json_reply(found)
        m = _EXPLAIN.match(path)
        if m is not None and self.explain is not None:
            raw = m["id"]
            if not raw.isascii() or not raw.isdigit() or len(raw) > 19:
                return error_reply(400, "INVALID_ARGUMENT",
                                   "a message id is the number publish returned")
            if not self._explain_allowed():
                return error_reply(429, "TOO_MANY_REQUESTS",
                                   f"at most {EXPLAINS_PER_S} explains a second; try again")
            return json_reply(self.explain(int(raw)))
        return error_reply(404, "NOT_FOUND", f"no such path {path[:200]!r}; see /api")
