"""zq: a lightweight durable message and task broker on ZeroMQ."""

from zq.client import Client, Consumer, Message
from zq.errors import (
    AlreadySettled,
    ClientClosed,
    ConnectionLost,
    FrameTooLarge,
    InvalidCredit,
    InvalidQueueName,
    MalformedFrame,
    OperationTimeout,
    ProtocolViolation,
    SessionUnknown,
    ShuttingDown,
    StaleDelivery,
    StorageError,
    StorageFull,
    UnknownDelivery,
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
    "InvalidCredit",
    "InvalidQueueName",
    "MalformedFrame",
    "Message",
    "OperationTimeout",
    "ProtocolViolation",
    "SessionUnknown",
    "ShuttingDown",
    "StaleDelivery",
    "StorageError",
    "StorageFull",
    "UnknownDelivery",
    "ZqError",
    "__version__",
    "error_from_code",
]
