"""The worker node: the task API (``zq.App``) and the worker runtime (``zq.Worker``,
``zq worker``).

From the bottom up (each imports only those above it):

- :mod:`~zq.node.calls`: a task call as a message (body, result check, error
  report, ``TaskFailed``), no I/O;
- :mod:`~zq.node.retry`: ``zq.Retry``, the delay before a failed task's next attempt;
- :mod:`~zq.node.credit`: how far a worker's credit grows (no I/O, no clock);
- :mod:`~zq.node.config`: ``WorkerConfig`` and :func:`~zq.node.config.worker_config`
  (defaults < file < environment < flags);
- :mod:`~zq.node.handle`, :mod:`~zq.node.app`: ``TaskHandle``, ``App`` and ``Task``;
- :mod:`~zq.node.runner`: runs a task's function (loop, threads, processes), and
  ``zq.current_message()``;
- :mod:`~zq.node.worker`: ``zq.Worker``;
- :mod:`~zq.node.launch`: ``zq worker``: load the App, build its Worker, serve it.

``zq.tasks`` and ``zq.worker``, the old import paths, are aliases of these. The
names below load on first use, so ``import zq.node.calls`` loads no ZeroMQ.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zq.node.app import App, Task
    from zq.node.calls import TaskFailed
    from zq.node.config import WorkerConfig, worker_config
    from zq.node.handle import TaskHandle
    from zq.node.retry import Retry
    from zq.node.runner import current_message
    from zq.node.worker import Worker

_HOMES = {
    "App": "app", "Task": "app", "TaskHandle": "handle", "Retry": "retry",
    "TaskFailed": "calls", "Worker": "worker", "WorkerConfig": "config",
    "worker_config": "config", "current_message": "runner",
}

__all__ = [
    "App",
    "Retry",
    "Task",
    "TaskFailed",
    "TaskHandle",
    "Worker",
    "WorkerConfig",
    "current_message",
    "worker_config",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'zq.node' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"zq.node.{home}"), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value
