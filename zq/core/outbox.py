"""The outbox: frames for the shell to send, now or once the current batch is stored. No I/O.

A frame that must not go before the store has what it says (a CONFIRM, a MANAGE
reply that changed something) waits in ``unstored``; the
shell sends ``out``. One entry is ``(identity, parts, msgs)``: ``msgs`` are the
messages of a DELIVER (so a failed send can undo the delivery), ``[]`` for a reply
that only read (sent even when its commit fails), None for any other frame.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from zq.errors import ZqError
from zq.protocol import codec
from zq.protocol import frames as f

if TYPE_CHECKING:
    from zq.core.model import Msg, Peer


class Outgoing(NamedTuple):
    identity: bytes
    parts: list[bytes]
    msgs: list[Msg] | None


class Outbox:
    """``out`` to send now; ``unstored`` once the batch they follow is stored."""

    __slots__ = ("counters", "out", "unstored")

    def __init__(self, counters: dict[str, int]) -> None:
        self.counters = counters  # the core's: errors sent are counted
        self.out: list[Outgoing] = []
        self.unstored: list[Outgoing] = []

    def send(self, identity: bytes, parts: list[bytes]) -> None:
        self.out.append(Outgoing(identity, parts, None))

    def fail(self, identity: bytes, exc: ZqError, op: int, ref: Any) -> None:
        """An ERROR frame for the request ``op``/``ref`` that failed with ``exc``."""
        self.counters["errors_sent"] += 1
        self.send(identity, codec.encode(f.Error(exc.code, exc.name, exc.message, op, ref,
                                                 exc.attrs.get("info"))))

    def after_commit(self, identity: bytes, parts: list[bytes], readonly: bool = False
                     ) -> None:
        """A reply that goes once what came before it is stored (and confirmed). One to
        a reading operation (``readonly``) goes out even if that commit fails."""
        self.unstored.append(Outgoing(identity, parts, [] if readonly else None))

    def take_unstored(self) -> list[Outgoing]:
        taken, self.unstored = self.unstored, []
        return taken

    def release(self, peers: dict[bytes, Peer], frames: list[Outgoing]) -> None:
        """Frames whose commit returned go out, unless their session ended meanwhile:
        a session dropped while the commit ran had its messages requeued, and a new
        session of the same client must not get the old session's deliveries."""
        for d in frames:
            peer = peers.get(d.identity)
            if peer is None:
                continue
            msgs = d.msgs
            held = peer.held
            # Usually the first tells (a new session holds none of them); a time limit
            # that ran out during the commit may have taken some of a frame, not all.
            if not msgs or held.get(msgs[0].id) is msgs[0] or any(
                    held.get(m.id) is m for m in msgs):
                self.out.append(d)

    def fail_replies(self, peers: dict[bytes, Peer], frames: list[Outgoing], exc: ZqError
                     ) -> list[Outgoing]:
        """Answer now, with ``exc``, the replies among ``frames`` that waited for a commit
        that failed; return the rest (DELIVERs, and replies that only read)."""
        keep: list[Outgoing] = []
        for d in frames:
            if d.msgs is not None:
                keep.append(d)
                continue
            if d.identity not in peers:
                continue
            reply = codec.decode(d.parts)
            op = f.STATS if isinstance(reply, f.StatsReply) else f.MANAGE
            self.fail(d.identity, type(exc)(
                f"not stored: {exc.message}; what the request changed stays in effect in "
                f"the broker and is stored by a later commit"), op, getattr(reply, "req", None))
        return keep
