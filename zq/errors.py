"""One error hierarchy for zq, with stable codes that also travel in ERROR frames.

Each class has a numeric ``code`` (on the wire), a ``name`` (in logs, docs and the
CLI) and a ``retriable`` flag: retriable errors may succeed if the same request is
sent again later unchanged. :func:`error_from_code` turns a code back into a class.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ZqError(Exception):
    """Root of every error zq raises."""

    code: ClassVar[int] = 1
    name: ClassVar[str] = "INTERNAL"
    retriable: ClassVar[bool] = False

    def __init__(self, message: str = "", **attrs: Any) -> None:
        super().__init__(message or self.name)
        self.message = message or self.name
        self.attrs = attrs
        for key, value in attrs.items():
            setattr(self, key, value)

    def __str__(self) -> str:
        return f"{self.name}: {self.message}"


class InternalError(ZqError):
    """A bug or an unexpected failure inside the broker."""


class MalformedFrame(ZqError):
    """A frame could not be decoded: bad signature, msgpack, field types or counts."""

    code = 2
    name = "MALFORMED_FRAME"


class UnsupportedVersion(ZqError):
    """The peer speaks a protocol version this side does not."""

    code = 3
    name = "UNSUPPORTED_VERSION"


class UnknownOpcode(ZqError):
    """The opcode is not one this version defines."""

    code = 4
    name = "UNKNOWN_OPCODE"


class ProtocolViolation(ZqError):
    """A well-formed frame arrived in a state where it is not allowed."""

    code = 5
    name = "PROTOCOL_VIOLATION"


class FrameTooLarge(ZqError):
    """A frame, a header or a batch exceeds a configured limit."""

    code = 6
    name = "FRAME_TOO_LARGE"


class SessionUnknown(ZqError):
    """The broker has no session for this peer (never said HELLO, or was dropped).

    The client recovers by sending HELLO again.
    """

    code = 7
    name = "SESSION_UNKNOWN"
    retriable = True


class InvalidCredit(ZqError):
    """A CREDIT grant was zero, negative, or beyond the broker's window limit."""

    code = 10
    name = "INVALID_CREDIT"


class UnknownDelivery(ZqError):
    """An ACK, NACK or RELEASE named a message this consumer does not hold."""

    code = 11
    name = "UNKNOWN_DELIVERY"


class StaleDelivery(ZqError):
    """An ACK or NACK named an attempt that is no longer the current one."""

    code = 12
    name = "STALE_DELIVERY"


class InvalidQueueName(ZqError):
    """A queue name is empty, too long, or not valid UTF-8."""

    code = 13
    name = "INVALID_QUEUE_NAME"


class QueueFull(ZqError):
    """The queue is at its maximum length and its overflow rule is ``reject``.

    Nothing of the refused PUBLISH was stored; retry once consumers catch up.
    """

    code = 14
    name = "QUEUE_FULL"
    retriable = True


class UnknownQueue(ZqError):
    """A queue operation named a queue the broker does not have."""

    code = 15
    name = "UNKNOWN_QUEUE"


class InvalidArgument(ZqError):
    """A queue setting, a publish option or an operation argument is out of range."""

    code = 16
    name = "INVALID_ARGUMENT"


class Forbidden(ZqError):
    """The key this session proved at the handshake may not do this operation on this
    queue (the broker's ``--permissions`` file). Nothing was changed.

    ``right`` names the right it needs (publish, consume, manage, admin, relay) and
    ``queue`` the queue, when there is one (attributes of the broker's or router's
    exception; on the wire, the ERROR's text says them).
    """

    code = 17
    name = "FORBIDDEN"


class TooManySessions(ZqError):
    """The broker holds its most sessions, overall or for this key (``max_sessions``,
    ``max_sessions_per_key``); try again when others have left."""

    code = 18
    name = "TOO_MANY_SESSIONS"
    retriable = True


class ShuttingDown(ZqError):
    """The broker is stopping and takes no new work; try another broker or later."""

    code = 20
    name = "SHUTTING_DOWN"
    retriable = True


class Unavailable(ZqError):
    """The broker that holds the queue cannot be reached now (a router says so)."""

    code = 21
    name = "UNAVAILABLE"
    retriable = True


class Moved(ZqError):
    """The queue lives on another broker: ``info`` says which and where."""

    code = 22
    name = "MOVED"
    retriable = True


class StaleConfig(ZqError):
    """The sender's cluster configuration is older than the receiver's."""

    code = 23
    name = "STALE_CONFIG"
    retriable = True


class QueueConflict(ZqError):
    """A queue was found on two brokers; it is refused until an operator resolves it."""

    code = 24
    name = "QUEUE_CONFLICT"


class ClusterMismatch(ZqError):
    """A peer belongs to another cluster (another cluster_id)."""

    code = 25
    name = "CLUSTER_MISMATCH"


class Unroutable(ZqError):
    """A PUBLISH to a topic matched no binding (and the topic refuses such publishes),
    or named no topic."""

    code = 26
    name = "UNROUTABLE"


class StorageFull(ZqError):
    """The store has no room; nothing of the refused request was stored."""

    code = 30
    name = "STORAGE_FULL"
    retriable = True


class StorageError(ZqError):
    """The store failed; nothing of the refused request was stored."""

    code = 31
    name = "STORAGE_ERROR"
    retriable = True


class ConnectionLost(ZqError):
    """The peer stopped answering heartbeats, or the connection broke."""

    code = 40
    name = "CONNECTION_LOST"
    retriable = True


class ClientClosed(ZqError):
    """The operation was cut short because this side closed the client."""

    code = 41
    name = "CLIENT_CLOSED"


class OperationTimeout(ZqError):
    """A client-side wait ran out of time."""

    code = 42
    name = "TIMEOUT"
    retriable = True


class AlreadySettled(ZqError):
    """A message was acked, nacked or released twice on the client side."""

    code = 43
    name = "ALREADY_SETTLED"


_BY_CODE: dict[int, type[ZqError]] = {}


def _register(cls: type[ZqError]) -> None:
    for sub in cls.__subclasses__():
        if sub.code in _BY_CODE and _BY_CODE[sub.code] is not sub:
            raise RuntimeError(f"duplicate error code {sub.code}")
        _BY_CODE[sub.code] = sub
        _register(sub)


_BY_CODE[ZqError.code] = InternalError
_register(ZqError)


def error_from_code(code: int, message: str = "", **attrs: Any) -> ZqError:
    """Build the exception for a wire ``code``; unknown codes become InternalError."""
    cls = _BY_CODE.get(code, InternalError)
    return cls(message, code_seen=code, **attrs) if cls is InternalError else cls(message, **attrs)


def all_error_classes() -> list[type[ZqError]]:
    """Every concrete error class, ordered by code (used by docs and tests)."""
    return sorted(set(_BY_CODE.values()), key=lambda c: c.code)
