"""The uplink's PUBLISH frames in flight: sent to the centre, not confirmed yet. No I/O.

A frame stays here, encoded, until the centre confirms it or refuses it for good; it is
sent again as it is (same seq, same bodies) on every new session and after a refusal
that may pass (UNAVAILABLE, QUEUE_FULL, STORAGE_FULL, ...), with a growing pause. The
limits keep the frames in flight well below what the centre remembers per producer
(``producer_window``, 20,000 frames by default), so a resend is always known there as
one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zq.core.uplink import Run

# Refusals that say the frame itself cannot be stored, however often it is sent: its
# messages are dead here (with the reason), not sent again.
PERMANENT = frozenset({"FRAME_TOO_LARGE", "INVALID_QUEUE_NAME", "INVALID_ARGUMENT"})
MAX_FRAMES = 1_000
MAX_MESSAGES = 20_000
MAX_BYTES = 32 * 1024 * 1024
RETRY_FIRST = 0.25  # seconds before a refused frame goes again; doubled each time
RETRY_MOST = 5.0


class Sent:
    """One frame in flight: its run, its encoded parts, when it last went out."""

    __slots__ = ("at", "last", "parts", "retry_at", "run", "tries")

    def __init__(self, run: Run, parts: list[bytes], now: float) -> None:
        self.run = run
        self.parts = parts
        self.at = now
        self.tries = 0  # refusals that may pass, so far
        self.last = ""  # the latest of them (an error name)
        self.retry_at = 0.0  # refused: when to send it again (0: it is out)


class Flight:
    """Frames sent and not yet confirmed, by seq, in the order they were sent."""

    def __init__(self, max_frames: int = MAX_FRAMES, max_messages: int = MAX_MESSAGES,
                 max_bytes: int = MAX_BYTES) -> None:
        self.max_frames = max_frames
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.sent: dict[int, Sent] = {}
        self.messages = 0
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.sent)

    def room(self) -> tuple[int, int]:
        """Messages and bytes that may go out now (0, 0 when full)."""
        if len(self.sent) >= self.max_frames or self.messages >= self.max_messages:
            return 0, 0
        return self.max_messages - self.messages, max(0, self.max_bytes - self.bytes)

    def add(self, run: Run, parts: list[bytes], now: float) -> Sent:
        s = self.sent[run.seq] = Sent(run, parts, now)
        self.messages += len(run.msgs)
        self.bytes += run.size
        return s

    def _pop(self, seq: int) -> Sent | None:
        s = self.sent.pop(seq, None)
        if s is not None:
            self.messages -= len(s.run.msgs)
            self.bytes -= s.run.size
        return s

    def confirmed(self, seq: int, count: int) -> Sent | None:
        """The centre stored frame ``seq`` (``count`` bodies); None if it is not ours or
        the count differs (a frame that is not this one: it stays to be sent again)."""
        s = self.sent.get(seq)
        if s is None or len(s.run.msgs) != count:
            return None
        return self._pop(seq)

    def refused(self, seq: int, name: str, now: float) -> tuple[bool, Sent] | None:
        """Frame ``seq`` was refused with error ``name``: (True, it) if for good (it is no
        longer in flight), (False, it) if it goes again later; None if not ours."""
        s = self.sent.get(seq)
        if s is None:
            return None
        if name in PERMANENT:
            self._pop(seq)
            return True, s
        s.tries += 1
        s.last = name
        s.retry_at = now + min(RETRY_MOST, RETRY_FIRST * 2 ** min(s.tries - 1, 8))
        return False, s

    def due(self, now: float) -> list[Sent]:
        """Refused frames whose pause is over: to send again now."""
        out = [s for s in self.sent.values() if s.retry_at and s.retry_at <= now]
        for s in out:
            s.retry_at, s.at = 0.0, now
        return out

    def everything(self, now: float) -> list[Sent]:
        """Every frame, in the order sent: all go again on a new session."""
        out = list(self.sent.values())
        for s in out:
            s.retry_at, s.at = 0.0, now
        return out

    def overdue(self, now: float, after: float) -> bool:
        """Whether a frame that is out (not waiting to be sent again) has waited more than
        ``after`` seconds for its answer: the session is not to be trusted."""
        return any(not s.retry_at and now - s.at > after for s in self.sent.values())

    def refused_since(self, name: str, tries: int) -> bool:
        """Whether some frame has been refused with ``name`` at least ``tries`` times in
        a row (UNAVAILABLE from a router that lost the queue's broker: another router
        of the centre may reach it)."""
        return any(s.tries >= tries and s.last == name for s in self.sent.values())

    def oldest(self) -> float:
        """Publish time (monotonic) of the oldest message in flight; 0 if none."""
        return min((s.run.msgs[0].t for s in self.sent.values()), default=0.0)

    def runs(self) -> list[Run]:
        return [s.run for s in self.sent.values()]
