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

__version__ = "0.1.0"

__all__ = [
    "AlreadySettled",
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
    "SessionUnknown",
    "ShuttingDown",
    "StaleDelivery",
    "StorageError",
    "StorageFull",
    "UnknownDelivery",
    "UnknownQueue",
    "ZqError",
    "__version__",
    "error_from_code",
]
