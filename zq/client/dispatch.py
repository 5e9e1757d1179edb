"""What arrives from the broker, and what the session decides, handed to what waits.

No I/O. Deliveries go to their consumer, confirms and refusals to the
publishes they answer, replies to their requests, and what concerns the
session itself (WELCOME, BYE, SESSION_UNKNOWN, a fatal ERROR) to
:class:`Session`, whose actions are returned for the connection to carry out.
Two of those actions land here again: a lost session fails everything that
waits (:meth:`Dispatch.fail`), a new one restores it (:meth:`Dispatch.restore`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from zq.client.session import FATAL_CODES, Action
from zq.errors import Moved, SessionUnknown, ZqError, error_from_code
from zq.protocol import codec
from zq.protocol import frames as f

if TYPE_CHECKING:
    from collections import deque

    from zq.client.outbox import Outbox, Sent
    from zq.client.requests import Requests
    from zq.client.session import Session

log = logging.getLogger("zq.client")

_NOTHING: tuple[Action, ...] = ()


class Subscriber(Protocol):
    """What the connection needs of a consumer (``zq.Consumer`` is one)."""

    queue: str

    def on_deliver(self, frame: f.Deliver) -> None: ...
    def on_error(self, exc: ZqError) -> None: ...
    def on_undecodable(self, n: int) -> None: ...
    def on_new_session(self) -> None: ...


class Dispatch:
    """Routes frames from one broker, and the ends and restarts of its sessions."""

    def __init__(self, session: Session, outbox: Outbox, requests: Requests,
                 consumers: Mapping[str, Subscriber], errors: deque[ZqError]) -> None:
        self.session = session
        self.outbox = outbox
        self.requests = requests
        self.consumers = consumers
        self.errors = errors  # errors nothing waited for: the application reads them
        # A PUBLISH answered MOVED: True if it was taken to go elsewhere (the client
        # that owns the connection follows MOVED), False to fail the publish with it.
        self.moved: Callable[[Sent, ZqError], bool] | None = None
        # A HELLO refused (a replicated broker's standby names its primary): True if
        # the connection took it (its open() fails at once, the next endpoint is tried).
        self.hello_refused: Callable[[ZqError], bool] | None = None

    def frame(self, frame: f.Frame, now: float) -> Sequence[Action]:
        """Handle one frame; what the session must do about it."""
        match frame:
            case f.Deliver():
                consumer = self.consumers.get(frame.queue)
                if consumer is None:
                    self.outbox.release(frame.ids)
                else:
                    consumer.on_deliver(frame)
            case f.Confirm():
                answered = self.outbox.answered
                for seq, first, count in frame.entries:
                    sent = answered(seq)
                    if sent is not None:  # None: a confirm for a frame resent after a restart
                        sent.resolve(first, count)
            case f.Heartbeat():
                pass
            case f.Error():
                return self._error(frame, now)
            case f.Welcome():
                return self.session.on_welcome(frame, now)
            case (f.StatsReply(req=req, stats=reply) | f.ManageReply(req=req, result=reply)
                  | f.Location(req=req, loc=reply)):
                self.requests.answer(req, reply)
            case f.Bye():
                return self.session.on_bye(frame.reason, now)
            case _:
                log.warning("unexpected frame from broker: %r", frame)
        return _NOTHING

    def _error(self, frame: f.Error, now: float) -> Sequence[Action]:
        exc = error_from_code(frame.code, frame.text, op=frame.op, ref=frame.ref,
                              info=frame.info)
        if isinstance(exc, SessionUnknown):
            return self.session.on_session_unknown(exc, now)
        if self._claimed(frame.op, frame.ref, exc):
            return _NOTHING
        if frame.op == f.HELLO and self.hello_refused is not None and self.hello_refused(exc):
            return _NOTHING
        log.warning("broker error: %s", exc)
        self.errors.append(exc)
        if frame.code in FATAL_CODES:
            return self.session.give_up(exc, now)
        return _NOTHING

    def _claimed(self, op: int, ref: Any, exc: ZqError) -> bool:
        """Give a refusal to what waits for it: a publish, a request, a settlement
        waited on, a consumer's credit. False if nothing did (a stray error)."""
        if op == f.PUBLISH and isinstance(ref, int):
            sent = self.outbox.answered(ref)
            if sent is not None:
                if not (isinstance(exc, Moved) and self.moved is not None
                        and self.moved(sent, exc)):
                    sent.reject(exc)
                return True
        if op in (f.STATS, f.MANAGE, f.LOCATE) and isinstance(ref, int):
            return self.requests.refuse(ref, exc)
        if op in (f.ACK, f.NACK) and isinstance(ref, list) and self.requests.claim(ref, exc):
            log.debug("broker refused a settlement waited on: %s", exc)
            return True
        consumer = self.consumers.get(ref) if op == f.CREDIT and isinstance(ref, str) else None
        if consumer is not None:
            consumer.on_error(exc)
            return True
        return False

    def undecodable(self, parts: list[bytes], exc: ZqError) -> None:
        """A frame from the broker we cannot decode: never dropped in silence.

        It is logged and kept in ``errors`` (where the application finds it). A reply
        fails the request it answers. A DELIVER whose ids can still be read is NACKed
        with the reason, so the broker counts the attempt and retries or dead-letters
        the messages instead of leaving them leased to us for as long as we live.
        """
        log.error("undecodable frame from broker: %s", exc)
        self.errors.append(exc)
        req = codec.reply_req(parts)
        if req is not None:
            self.requests.refuse(req, exc)  # the request fails instead of waiting for ever
        salvaged = codec.deliver_ids(parts)
        if salvaged is not None:
            ids, attempts = salvaged
            reason = f"the client could not decode the DELIVER: {exc.message}"[:1000]
            for mid, att in zip(ids, attempts, strict=True):
                self.outbox.nack(mid, att, True, 0, reason)
            consumer = self.consumers.get(parts[1].decode("utf-8", "replace"))
            if consumer is not None:
                consumer.on_undecodable(len(ids))

    def fail(self, exc: ZqError) -> None:
        """Fail every publish, request and consumer waiting on the session."""
        for fut in self.outbox.drop() + self.requests.drop():
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # mark retrieved: nobody may be awaiting it any more
        for consumer in list(self.consumers.values()):
            consumer.on_error(exc)

    def restore(self, epoch: int) -> None:
        """The new session ``epoch`` replaces one the broker lost: unconfirmed publishes
        and the requests voided for it go out again, and every consumer grants its
        window again (credit is sent after them)."""
        self.outbox.resend()
        for parts in self.requests.resend(epoch):
            self.outbox.append(parts)
        for consumer in self.consumers.values():
            consumer.on_new_session()
