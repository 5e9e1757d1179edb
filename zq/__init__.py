"""zq: a lightweight durable message and task broker on ZeroMQ."""

from zq.client import Client, Consumer, Message
from zq.errors import (
    AlreadySettled,
    ClientClosed,
    ConnectionLost,
    FrameTooLarge,
    InvalidArgument,
    InvalidCredit,
    InvalidQueueName,
    MalformedFrame,
    OperationTimeout,
    ProtocolViolation,
    QueueFull,
    SessionUnknown,
    ShuttingDown,
    StaleDelivery,
    StorageError,
    StorageFull,
    UnknownDelivery,
    UnknownQueue,
    ZqError,
    error_from_code,
)
from zq.tasks import App, Retry, TaskFailed, TaskHandle
from zq.worker import Worker, current_message

__version__ = "0.1.0"

__all__ = [
    "AlreadySettled",
    "App",
    "Client",
    "ClientClosed",
    "ConnectionLost",
    "Consumer",
    "FrameTooLarge",
    "InvalidArgument",
    "InvalidCredit",
    "InvalidQueueName",
    "MalformedFrame",
    "Message",
    "OperationTimeout",
    "ProtocolViolation",
    "QueueFull",
    "Retry",
    "SessionUnknown",
    "ShuttingDown",
    "StaleDelivery",
    "StorageError",
    "StorageFull",
    "TaskFailed",
    "TaskHandle",
    "UnknownDelivery",
    "UnknownQueue",
    "Worker",
    "ZqError",
    "__version__",
    "current_message",
    "error_from_code",
]
