"""The client's outbox without I/O: coalescing, splitting, causal order, START."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from zq.client.outbox import Outbox
from zq.protocol import codec
from zq.protocol import frames as f


def fut() -> Future[Any]:
    return Future()


def decoded(outbox: Outbox) -> list[f.Frame]:
    return [codec.decode(parts) for parts in outbox.take()]


def welcome(max_batch: int = 100, max_frame: int = 1 << 20, starts: bool = True) -> f.Welcome:
    return f.Welcome("b", heartbeat_ms=1000, liveness=3, max_batch=max_batch,
                     max_credit=1000, max_frame=max_frame, starts=starts)


def test_publishes_of_one_turn_travel_as_one_frame() -> None:
    outbox = Outbox()
    futs = [fut() for _ in range(3)]
    for i, x in enumerate(futs):
        outbox.publish("q", b"m%d" % i, None, x)
    assert outbox.unconfirmed == 3
    assert outbox.urgent
    assert decoded(outbox) == [f.Publish("q", 1, [b"m0", b"m1", b"m2"])]
    assert outbox.take() == []
    assert outbox.empty
    sent = outbox.answered(1)
    assert sent is not None
    assert outbox.unconfirmed == 0
    sent.resolve(40, 3)
    assert [x.result() for x in futs] == [40, 41, 42]
    assert outbox.answered(1) is None  # answered once


def test_the_codec_encodes_every_publish() -> None:
    outbox = Outbox()
    opts = f.Options(priority=3)
    outbox.publish("q", b"a", {"k": 1}, fut())
    outbox.publish("q", b"b", None, fut())
    outbox.publish_opts("q", b"c", None, opts, fut())
    outbox.publish_frame("r", [b"d", b"e"], [], fut(), opts)
    parts = outbox.take()
    assert parts == [
        codec.encode(f.Publish("r", 1, [b"d", b"e"], [], opts)),  # publish_frame: at once
        codec.encode(f.Publish("q", 2, [b"a", b"b"], [{"k": 1}, None])),
        codec.encode(f.Publish("q", 3, [b"c"], [], opts)),
    ]


def test_options_and_dedup_ids_keep_publishes_apart() -> None:
    outbox = Outbox()
    urgent, dedup = f.Options(priority=9), f.Options(dedup_id="x")
    outbox.publish("q", b"1", None, fut())
    outbox.publish_opts("q", b"2", None, urgent, fut())
    outbox.publish("q", b"3", None, fut())
    outbox.publish_opts("q", b"4", None, urgent, fut())
    outbox.publish_opts("q", b"5", None, dedup, fut())
    outbox.publish_opts("q", b"6", None, dedup, fut())
    outbox.publish("other", b"7", None, fut())
    frames = decoded(outbox)
    assert [(p.queue, p.bodies, p.opts) for p in frames if isinstance(p, f.Publish)] == [
        ("q", [b"1", b"3"], None),
        ("q", [b"2", b"4"], urgent),
        ("q", [b"5"], dedup),  # a dedup_id travels alone
        ("q", [b"6"], dedup),
        ("other", [b"7"], None),
    ]


def test_publishes_are_split_by_the_brokers_max_batch() -> None:
    outbox = Outbox()
    outbox.welcome(welcome(max_batch=2))
    futs = [fut() for _ in range(5)]
    for i, x in enumerate(futs):
        outbox.publish("q", b"%d" % i, None, x)
    frames = decoded(outbox)
    assert [p.bodies for p in frames if isinstance(p, f.Publish)] == \
        [[b"0", b"1"], [b"2", b"3"], [b"4"]]
    for seq, first in ((1, 10), (2, 20), (3, 30)):
        sent = outbox.answered(seq)
        assert sent is not None
        sent.resolve(first, len(sent.frame.bodies))
    assert [x.result() for x in futs] == [10, 11, 20, 21, 30]


def test_publishes_are_split_by_the_brokers_max_frame() -> None:
    outbox = Outbox()
    outbox.welcome(welcome(max_frame=4096))
    for _ in range(10):
        outbox.publish("q", b"x" * 1000, {"h": "y" * 100}, fut())
    parts = outbox.take()
    assert len(parts) > 2
    assert all(sum(map(len, p)) <= 4096 for p in parts)
    publishes = [codec.decode(p) for p in parts]
    assert sum(len(p.bodies) for p in publishes if isinstance(p, f.Publish)) == 10


def test_options_take_their_room_off_the_frame() -> None:
    outbox = Outbox()
    outbox.welcome(welcome(max_frame=4096))
    opts = f.Options(tenant="t" * 200, dedup_id=None, priority=1)
    for _ in range(6):
        outbox.publish_opts("q", b"x" * 1100, None, opts, fut())
    assert all(sum(map(len, p)) <= 4096 for p in outbox.take())


def test_coalesced_frames_come_in_causal_order() -> None:
    outbox = Outbox()
    outbox.welcome(welcome())
    taker = Taker("q", [(7, 1, False)])
    outbox.publish("q", b"m", None, fut())
    outbox.note_starting(taker)
    outbox.ack(1, 1)
    outbox.nack(2, 1, True, 0, "later")
    outbox.release([3])
    outbox.grant("q", 2)
    taker.owed = 3
    outbox.owe(taker)
    assert [type(x).__name__ for x in decoded(outbox)] == \
        ["Publish", "Start", "Ack", "Nack", "Release", "Credit"]
    assert taker.owed == 0


def test_a_control_frame_goes_after_everything_requested_before_it() -> None:
    outbox = Outbox()
    outbox.publish("q", b"m", None, fut())
    outbox.ack(5, 2)
    outbox.grant("q", 1)
    outbox.control(codec.encode(f.Manage(9, "sync", {})))
    outbox.ack(6, 1)  # after the MANAGE: stays after it
    assert decoded(outbox) == [f.Publish("q", 1, [b"m"]), f.Ack([5], [2]), f.Credit("q", 1),
                               f.Manage(9, "sync", {}), f.Ack([6], [1])]


def test_cancel_voids_credit_not_sent_yet() -> None:
    outbox = Outbox()
    outbox.grant("q", 5)
    outbox.grant("r", 1)
    outbox.cancel("q")
    assert decoded(outbox) == [f.Credit("r", 1), f.Cancel("q")]  # causal, like any control


def test_settlements_coalesce_and_split_by_max_batch() -> None:
    outbox = Outbox()
    outbox.welcome(welcome(max_batch=2))
    for mid in range(1, 6):
        outbox.ack(mid, 1)
    outbox.nack(6, 1, True, 0, "a")
    outbox.nack(7, 2, True, 0, "a")
    outbox.nack(8, 1, False, 0, "b")
    outbox.release([9, 10, 11])
    assert decoded(outbox) == [
        f.Ack([1, 2], [1, 1]), f.Ack([3, 4], [1, 1]), f.Ack([5], [1]),
        f.Nack([6, 7], [1, 2], True, 0, "a"), f.Nack([8], [1], False, 0, "b"),
        f.Release([9, 10]), f.Release([11]),
    ]


def test_owed_credit_joins_granted_credit() -> None:
    outbox = Outbox()
    a, b = Taker("q", []), Taker("r", [])
    outbox.grant("q", 2)
    a.owed, b.owed = 3, 0
    outbox.owe(a)
    outbox.owe(b)
    assert decoded(outbox) == [f.Credit("q", 5)]


def test_start_names_only_taken_messages_not_settled_by_the_end_of_the_turn() -> None:
    outbox = Outbox()
    outbox.welcome(welcome(max_batch=2))
    a = Taker("q", [(1, 1, True), (2, 1, False), (3, 2, False)])
    b = Taker("r", [(4, 3, False)])
    outbox.note_starting(a)
    outbox.note_starting(b)
    assert decoded(outbox) == [f.Start([2, 3], [1, 2]), f.Start([4], [3])]
    assert a.taken == b.taken == []


def test_no_start_when_every_taken_message_was_settled() -> None:
    outbox = Outbox()
    outbox.welcome(welcome())
    outbox.note_starting(Taker("q", [(1, 1, True), (2, 1, True)]))
    assert outbox.take() == []


def test_no_start_to_a_broker_that_does_not_understand_it() -> None:
    outbox = Outbox()
    outbox.welcome(welcome(starts=False))
    taker = Taker("q", [(1, 1, False)])
    outbox.note_starting(taker)
    assert outbox.take() == []
    assert taker.taken == []  # forgotten all the same


def test_resend_repeats_unanswered_publishes_with_their_seqs() -> None:
    outbox = Outbox()
    outbox.publish("a", b"1", None, fut())
    first = outbox.take()
    outbox.publish("b", b"2", None, fut())
    second = outbox.take()
    outbox.answered(1)
    outbox.resend()
    assert outbox.take() == second
    assert first != second


def test_a_refused_publish_fails_only_its_own_futures() -> None:
    outbox = Outbox()
    mine, other = fut(), fut()
    outbox.publish("a", b"1", None, mine)
    outbox.publish("b", b"2", None, other)
    outbox.take()
    sent = outbox.answered(1)
    assert sent is not None
    exc = RuntimeError("queue full")
    sent.reject(exc)
    assert mine.exception() is exc
    assert not other.done()
    assert outbox.unconfirmed == 1


def test_drop_gives_every_future_waiting_on_the_session() -> None:
    outbox = Outbox()
    sent, batched, framed = fut(), fut(), fut()
    outbox.publish("a", b"1", None, sent)
    outbox.take()
    outbox.publish_frame("b", [b"2", b"3"], [], framed)
    outbox.publish("c", b"4", None, batched)
    assert outbox.unconfirmed == 4
    assert set(outbox.drop()) == {sent, batched, framed}
    assert (outbox.unconfirmed, outbox.sent, outbox.batches) == (0, {}, {})
    outbox.resend()
    assert outbox.take() == [codec.encode(f.Publish("b", 2, [b"2", b"3"]))]  # already queued


def test_publish_frame_future_gets_every_id() -> None:
    outbox = Outbox()
    x = fut()
    outbox.publish_frame("q", [b"a", b"b", b"c"], [], x)
    outbox.take()
    sent = outbox.answered(1)
    assert sent is not None
    sent.resolve(7, 3)
    assert x.result() == [7, 8, 9]


class Taker:
    """A consumer as the outbox sees it: taken messages as (id, attempt, settled)."""

    def __init__(self, queue: str, taken: list[tuple[int, int, bool]]) -> None:
        self.queue = queue
        self.taken = taken
        self.owed = 0

    def taken_unsettled(self, ids: list[int], attempts: list[int]) -> None:
        for mid, attempt, settled in self.taken:
            if not settled:
                ids.append(mid)
                attempts.append(attempt)
        self.taken = []

    def take_owed(self) -> int:
        n, self.owed = self.owed, 0
        return n
