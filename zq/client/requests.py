"""Requests that wait for the broker's reply (STATS, MANAGE, LOCATE), and settlements
waited on.

No I/O: the connection records a request when it sends it and hands over the
reply, the refusal or the loss of the session; this module decides which
future gets what. Request numbers come from the outbox's sequence (they share
it with PUBLISH seqs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zq.protocol import codec
from zq.protocol import frames as f

if TYPE_CHECKING:
    from zq.client.outbox import Promise
    from zq.errors import ZqError

# MANAGE operations sent again on a new session when the old one refused them with
# SESSION_UNKNOWN (reading or idempotent); the others fail with SESSION_UNKNOWN. The
# same ones go to the next node when theirs is lost (zq.client.nodes.MOVABLE).
RESENDABLE = frozenset({"sync", "info", "list", "peek", "declare", "pause", "resume",
                        "schedule_ls", "schedule_add", "status", "wait", "streams",
                        "stream_declare", "topics"})


class Request:
    """A STATS (``op`` None), MANAGE or LOCATE (``kind``, ``args["queue"]``) request
    waiting for its reply."""

    __slots__ = ("args", "epoch", "fut", "kind", "op", "resend")

    def __init__(self, op: str | None, args: dict[str, Any], fut: Promise, epoch: int,
                 kind: int | None = None) -> None:
        self.op = op
        self.args = args
        self.fut = fut
        self.epoch = epoch  # the HELLO it was sent after
        self.resend = False  # refused with SESSION_UNKNOWN: send again on the new session
        self.kind = kind if kind is not None else f.STATS if op is None else f.MANAGE

    @property
    def readonly(self) -> bool:
        """Reading or idempotent: may go again on a new session."""
        return self.kind != f.MANAGE or self.op in RESENDABLE

    def encode(self, req: int) -> list[bytes]:
        if self.kind == f.LOCATE:
            return codec.encode(f.Locate(req, self.args["queue"]))
        if self.op is None:
            return codec.encode(f.Stats(req))
        return codec.encode(f.Manage(req, self.op, self.args))


class Wait:
    """A settlement whose caller waits for the broker's verdict (``ack(wait=True)``)."""

    __slots__ = ("error",)

    def __init__(self) -> None:
        self.error: ZqError | None = None


class Requests:
    """Requests by number, and settlement waits by message id."""

    def __init__(self) -> None:
        self.pending: dict[int, Request] = {}
        self.waits: dict[int, list[Wait]] = {}  # message id -> settlements waited on

    def add(self, req: int, op: str | None, args: dict[str, Any], fut: Promise,
            epoch: int, kind: int | None = None) -> list[bytes]:
        """Record request ``req``, sent in session ``epoch``; its frame."""
        r = self.pending[req] = Request(op, args, fut, epoch, kind)
        return r.encode(req)

    def answer(self, req: int, result: dict[str, Any]) -> None:
        """A STATS_REPLY, MANAGE_REPLY or LOCATION."""
        r = self.pending.pop(req, None)
        if r is not None and not r.fut.done():
            r.fut.set_result(result)

    def refuse(self, req: int, exc: ZqError) -> bool:
        """An ERROR (or an undecodable reply) for request ``req``; whether it was ours."""
        r = self.pending.pop(req, None)
        if r is None:
            return False
        if not r.fut.done():
            r.fut.set_exception(exc)
        return True

    def void(self, epoch: int, exc: ZqError) -> None:
        """SESSION_UNKNOWN: requests sent before HELLO ``epoch`` were refused or lost.

        Reading and idempotent ones go out again once the new session is open;
        the others fail (they may or may not have taken effect).
        """
        for req, r in list(self.pending.items()):
            if r.epoch >= epoch or r.resend:
                continue
            if r.fut.done():
                del self.pending[req]
            elif r.readonly:
                r.resend = True
            else:
                del self.pending[req]
                r.fut.set_exception(exc)

    def resend(self, epoch: int) -> list[list[bytes]]:
        """The new session ``epoch`` is open: the frames of the requests to send again."""
        out = []
        for req, r in self.pending.items():
            if r.resend:
                r.resend = False
                r.epoch = epoch
                out.append(r.encode(req))
        return out

    def drop(self) -> list[Promise]:
        """Forget every request (the session is lost or the client closed); their futures."""
        futs = [r.fut for r in self.pending.values()]
        self.pending.clear()
        return futs

    # ------------------------------------------------------------ settlement waits

    def wait(self, mid: int) -> Wait:
        """Someone waits for the verdict on the settlement of ``mid`` just queued."""
        w = Wait()
        self.waits.setdefault(mid, []).append(w)
        return w

    def unwait(self, mid: int, w: Wait) -> None:
        waits = self.waits.get(mid)
        if waits is not None:
            if w in waits:
                waits.remove(w)
            if not waits:
                del self.waits[mid]

    def claim(self, ids: list[Any], exc: ZqError) -> bool:
        """Give a refused settlement's error to those waiting on it; whether all were."""
        if not self.waits:
            return False
        claimed = True
        for mid in ids:
            waits = self.waits.get(mid) if isinstance(mid, int) else None
            w = next((w for w in waits if w.error is None), None) if waits else None
            if w is None:
                claimed = False
            else:
                w.error = exc  # the oldest wait on this id: errors come in sending order
        return claimed
