"""The task API's old import path, kept so that code written before ``zq/node/`` works.

Everything here lives in :mod:`zq.node` (``app``, ``handle``, ``retry``, ``calls``).
"""

from __future__ import annotations

from zq.client import Client
from zq.client.client import make_options
from zq.errors import OperationTimeout
from zq.node.app import EXECUTORS, App, P, R, Task
from zq.node.calls import (
    MAX_MESSAGE,
    MAX_TRACEBACK,
    TASK_HEADER,
    ResultUnavailable,
    TaskFailed,
    check_result,
    decode_body,
    encode_body,
    error_report,
    failure,
    report,
    type_name,
)
from zq.node.handle import TaskHandle
from zq.node.retry import Retry
from zq.protocol import codec

FINAL_STATES = ("succeeded", "dead")  # unused by zq since zq/node/; kept for old imports

__all__ = [
    "EXECUTORS",
    "FINAL_STATES",
    "MAX_MESSAGE",
    "MAX_TRACEBACK",
    "TASK_HEADER",
    "App",
    "Client",
    "OperationTimeout",
    "P",
    "R",
    "ResultUnavailable",
    "Retry",
    "Task",
    "TaskFailed",
    "TaskHandle",
    "check_result",
    "codec",
    "decode_body",
    "encode_body",
    "error_report",
    "failure",
    "make_options",
    "report",
    "type_name",
]
