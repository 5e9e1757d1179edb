"""What ``zq worker`` does once its settings are merged: import the App, build its
Worker, serve it until a signal."""

from __future__ import annotations

import importlib
import os
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
                  cfg.drain_timeout, connect_timeout=cfg.connect_timeout)


async def serve(worker: Worker, on_ready: Callable[[], None] | None = None) -> None:
    """Run ``worker`` until SIGTERM / SIGINT, then close its App's client."""
    try:
        await worker.run(on_ready)
    finally:
        await worker.app.close()
