"""A one-line progress display on stderr while benchmarks run.

Only when stderr is a terminal (CI logs stay clean) and ``ZQ_PERF_PROGRESS`` is not
``0``. A daemon thread redraws one line every ``interval`` seconds with ``\\r``::

    suite (quick) > 3/12 one-message > throughput > zq: 0.8 s (in all 9.1 s), 9,000 of 20,000

Labels nest (:meth:`Progress.scope`); the elapsed time is the innermost scope's, and
the outermost one's follows when there are several. The line is cut to the
terminal's width. The detail comes from a callable (:meth:`Progress.source`) that the thread calls
at each redraw, so the code being measured pays nothing per message. Lines the
program prints to stderr meanwhile go through :meth:`Progress.say`, which
clears the progress line first.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TextIO

INTERVAL = 0.25  # seconds between redraws
_CLEAR = "\r\x1b[K"


class Progress:
    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None,
                 interval: float = INTERVAL) -> None:
        self._stream = stream
        self._enabled = enabled
        self.interval = interval
        self._labels: list[tuple[str, float]] = []
        self._source: Callable[[], str] | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()  # never set: the thread's sleep
        self._shown = False

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    @property
    def enabled(self) -> bool:
        if self._enabled is None:
            if os.environ.get("ZQ_PERF_PROGRESS", "") == "0":
                return False
            try:
                return self.stream.isatty()
            except (AttributeError, ValueError):
                return False
        return self._enabled

    @contextlib.contextmanager
    def scope(self, label: str) -> Iterator[None]:
        """Show ``label`` (after the outer scopes' labels) while the block runs."""
        with self._lock:
            self._labels.append((label, time.monotonic()))
        self._ensure_thread()
        try:
            yield
        finally:
            with self._lock:
                if self._labels and self._labels[-1][0] == label:
                    self._labels.pop()
                if not self._labels:
                    self._source = None
                    self._clear_locked()

    @contextlib.contextmanager
    def source(self, detail: Callable[[], str]) -> Iterator[None]:
        """Show ``detail()`` after the labels while the block runs."""
        with self._lock:
            saved, self._source = self._source, detail
        try:
            yield
        finally:
            with self._lock:
                self._source = saved

    def say(self, text: str) -> None:
        """Print a line on stderr (clearing the progress line first)."""
        with self._lock:
            self._clear_locked()
            print(text, file=self.stream, flush=True)

    def out(self, text: str) -> None:
        """Print a line on stdout (clearing the progress line first: both may be the
        same terminal)."""
        with self._lock:
            self._clear_locked()
            print(text, flush=True)

    def line(self) -> str:
        """The text of the progress line as it would be drawn now ('' outside any scope)."""
        with self._lock:
            return self._line_locked()

    def _line_locked(self) -> str:
        if not self._labels:
            return ""
        now = time.monotonic()
        labels = " > ".join(label for label, _ in self._labels)
        text = f"{labels}: {now - self._labels[-1][1]:.1f} s"
        if len(self._labels) > 1:
            text += f" (in all {now - self._labels[0][1]:.1f} s)"
        if self._source is not None:
            try:
                detail = self._source()
            except Exception:  # a display must never break a run
                detail = ""
            if detail:
                text += f", {detail}"
        return text

    def draw(self) -> None:
        width = _columns() - 1
        with self._lock:
            text = self._line_locked()
            if not text:
                return
            self.stream.write(_CLEAR + text[:width])
            self.stream.flush()
            self._shown = True

    def _clear_locked(self) -> None:
        if self._shown:
            self.stream.write(_CLEAR)
            self.stream.flush()
            self._shown = False

    def _ensure_thread(self) -> None:
        if not self.enabled or (self._thread is not None and self._thread.is_alive()):
            return
        self._thread = threading.Thread(target=self._run, name="perf-progress", daemon=True)
        self._thread.start()

    def _run(self) -> None:  # lives as long as the process (a daemon), idle between scopes
        while not self._wake.wait(self.interval):
            self.draw()


def _columns() -> int:
    try:
        cols = os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError):
        return 120
    return cols if cols >= 20 else 120  # a pseudo-terminal may report 0


BAR = Progress()  # the process's progress line, shared by every scenario
