"""The admin listener under load (``zq-admin``): the broker of ``zq`` with
``--admin-bind`` and a scraper that reads ``/metrics`` and ``/api/overview`` every
second for the whole run, as Prometheus and an open dashboard would.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import urllib.request
from types import TracebackType

INTERVAL = float(os.environ.get("ZQ_PERF_SCRAPE_S", "1.0"))  # seconds between scrapes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Scraper:
    """A thread polling the admin listener at ``port``; ``scrapes``, ``errors`` and the
    largest ``/metrics`` reply and slowest scrape, for the report."""

    def __init__(self) -> None:
        self.port = free_port()
        self.scrapes = 0
        self.errors = 0
        self.largest = 0
        self.slowest_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="scraper", daemon=True)

    def broker_args(self) -> list[str]:
        return ["--admin-bind", f"127.0.0.1:{self.port}"]

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def _poll(self) -> None:
        base = f"http://127.0.0.1:{self.port}"
        while not self._stop.wait(INTERVAL):
            began = time.monotonic()
            try:
                for path in ("/metrics", "/api/overview"):
                    with urllib.request.urlopen(base + path, timeout=5.0) as reply:
                        self.largest = max(self.largest, len(reply.read()))
            except OSError:
                self.errors += 1  # not up yet, or going away: counted, shown in the report
                continue
            self.scrapes += 1
            self.slowest_s = max(self.slowest_s, time.monotonic() - began)
