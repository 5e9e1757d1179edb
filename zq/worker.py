"""The worker's old import path, kept so that code written before ``zq/node/`` works.

Everything here lives in :mod:`zq.node` (``worker``, ``runner``, ``credit``,
``config``, ``launch``).
"""

from __future__ import annotations

from zq.client import Client, Consumer, Message
from zq.errors import ClientClosed, ConnectionLost, ZqError
from zq.node.app import App, Task
from zq.node.calls import TASK_HEADER, check_result, decode_body, error_report, report
from zq.node.config import SettingError, WorkerConfig, worker_config
from zq.node.credit import MAX_PREFETCH, auto_prefetch
from zq.node.launch import build_worker, load_app, serve
from zq.node.runner import current_message, run_in_process, stuck_threads
from zq.node.worker import (
    BAD_BODY,
    BAD_RESULT,
    UNKNOWN_TASK,
    Worker,
    log,
    result_limit,
)

__all__ = [
    "BAD_BODY",
    "BAD_RESULT",
    "MAX_PREFETCH",
    "TASK_HEADER",
    "UNKNOWN_TASK",
    "App",
    "Client",
    "ClientClosed",
    "ConnectionLost",
    "Consumer",
    "Message",
    "SettingError",
    "Task",
    "Worker",
    "WorkerConfig",
    "ZqError",
    "auto_prefetch",
    "build_worker",
    "check_result",
    "current_message",
    "decode_body",
    "error_report",
    "load_app",
    "log",
    "report",
    "result_limit",
    "run_in_process",
    "serve",
    "stuck_threads",
    "worker_config",
]
