"""What ``zq worker`` does once its settings are merged: import the App, build its
Worker, serve it until a signal."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from zq.node.app import App
from zq.node.config import WorkerConfig
from zq.node.worker import Worker


def _where(exc: BaseException) -> str:
    """`` (FILE, line N)`` of the last frame of ``exc`` not in the import machinery."""
    where = ""
    tb = exc.__traceback__
    while tb is not None:
        if not tb.tb_frame.f_code.co_filename.startswith("<frozen"):
            where = f" ({tb.tb_frame.f_code.co_filename}, line {tb.tb_lineno})"
        tb = tb.tb_next
    return where


def load_app(spec: str) -> App:
    """The App named by ``MODULE:ATTR`` (ATTR may be dotted); ValueError if it is not one."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"expected MODULE:ATTR, got {spec!r}")
    try:
        obj: Any = importlib.import_module(module)
    except ImportError as exc:
        raise ValueError(f"cannot import {module!r}: {exc}") from None
    except Exception as exc:  # the user's module raised while importing: say where
        raise ValueError(f"cannot import {module!r}: {type(exc).__name__}: {exc}"
                         f"{_where(exc)}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{module!r} has no attribute {attr!r}") from None
    if not isinstance(obj, App):
        raise ValueError(f"{spec} is a {type(obj).__name__}, not a zq.App")
    return obj


def build_worker(cfg: WorkerConfig) -> Worker:
    """Import the App (the current directory first on ``sys.path``) and make its Worker."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    app = load_app(cfg.app)
    if cfg.endpoint:
        app.endpoint = cfg.endpoint
    unknown = [q for q in cfg.queues if q not in app.queues()]
    if unknown:
        raise ValueError(f"no task of {cfg.app} uses queue(s) {', '.join(unknown)}; its "
                         f"queues are {', '.join(app.queues()) or 'none'}")
    return Worker(app, list(cfg.queues) or None, cfg.concurrency, cfg.prefetch,
                  cfg.drain_timeout, connect_timeout=cfg.connect_timeout,
                  broadcast_idle_ttl=cfg.broadcast_idle_ttl)


NODE_BEAT_FD = "ZQ_NODE_BEAT_FD"  # set by ``zq node``: the pipe its worker beats on
BEAT_EVERY = 0.2  # seconds between a worker's heartbeats to its node


async def serve(worker: Worker, on_ready: Callable[[], None] | None = None) -> None:
    """Run ``worker`` until SIGTERM / SIGINT, then close its App's client. Started by
    ``zq node``, it beats on the node's pipe from when it is ready, from its event
    loop: a loop that hangs stops beating, and the node replaces the worker."""
    beat = _Beat(os.environ.get(NODE_BEAT_FD, ""))

    def ready() -> None:
        beat.start()
        if on_ready is not None:
            on_ready()

    try:
        await worker.run(ready)
    finally:
        beat.stop()
        await worker.app.close()


class _Beat:
    """One byte on the node's pipe every BEAT_EVERY seconds (nothing without a pipe)."""

    def __init__(self, fd: str) -> None:
        self.fd = int(fd) if fd.isdigit() else -1
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        if self.fd >= 0:
            os.set_blocking(self.fd, False)
            self._tick()

    def _tick(self) -> None:
        try:
            os.write(self.fd, b".")
        except BlockingIOError:  # the node is behind: it has beats enough
            pass
        except OSError:  # the node is gone: stop as on SIGTERM (drain), not run unwatched
            self.fd = -1
            logging.getLogger("zq.worker").warning("its zq node is gone: stopping")
            os.kill(os.getpid(), signal.SIGTERM)
            return
        self._timer = asyncio.get_running_loop().call_later(BEAT_EVERY, self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
