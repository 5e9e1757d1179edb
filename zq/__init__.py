"""zq: a lightweight durable message and task broker on ZeroMQ.

The names below are loaded when first used (PEP 562), so that importing a part of zq
that has no I/O (``zq.protocol``, the broker's core) does not load ZeroMQ and asyncio
through this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zq.client import Client, Consumer, Message
    from zq.errors import (
        AlreadySettled,
        ClientClosed,
        ClusterMismatch,
        ConnectionLost,
        FrameTooLarge,
        InvalidArgument,
        InvalidCredit,
        InvalidQueueName,
        MalformedFrame,
        Moved,
        OperationTimeout,
        ProtocolViolation,
        QueueConflict,
        QueueFull,
        SessionUnknown,
        ShuttingDown,
        StaleConfig,
        StaleDelivery,
        StorageError,
        StorageFull,
        Unavailable,
        UnknownDelivery,
        UnknownQueue,
        Unroutable,
        ZqError,
        error_from_code,
    )
    from zq.node.canvas import chain, chord, group
    from zq.tasks import App, Retry, TaskFailed, TaskHandle
    from zq.worker import Worker, current_message

__version__ = "0.1.0"

__all__ = [
    "AlreadySettled",
    "App",
    "Client",
    "ClientClosed",
    "ClusterMismatch",
    "ConnectionLost",
    "Consumer",
    "FrameTooLarge",
    "InvalidArgument",
    "InvalidCredit",
    "InvalidQueueName",
    "MalformedFrame",
    "Message",
    "Moved",
    "OperationTimeout",
    "ProtocolViolation",
    "QueueConflict",
    "QueueFull",
    "Retry",
    "SessionUnknown",
    "ShuttingDown",
    "StaleConfig",
    "StaleDelivery",
    "StorageError",
    "StorageFull",
    "TaskFailed",
    "TaskHandle",
    "Unavailable",
    "UnknownDelivery",
    "UnknownQueue",
    "Unroutable",
    "Worker",
    "ZqError",
    "__version__",
    "chain",
    "chord",
    "current_message",
    "error_from_code",
    "group",
]


_HOMES = {
    **dict.fromkeys(("Client", "Consumer", "Message"), "zq.client"),
    **dict.fromkeys(("App", "Retry", "TaskFailed", "TaskHandle"), "zq.tasks"),
    **dict.fromkeys(("Worker", "current_message"), "zq.worker"),
    **dict.fromkeys(("chain", "chord", "group"), "zq.node.canvas"),
}


def __getattr__(name: str) -> Any:
    if name in __all__ and name != "__version__":
        module = importlib.import_module(_HOMES.get(name, "zq.errors"))
        value = getattr(module, name)
        globals()[name] = value  # once loaded, a plain attribute
        return value
    raise AttributeError(f"module 'zq' has no attribute {name!r}")
