"""BrokerCore queue semantics without I/O: lanes, tenants, delays, TTL, leases, dead letters,
dedup, overflow, and the MANAGE operations."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from tests.unit.test_core import A, B, Harness, P, delivers, errors_of, only
from tests.unit.test_core_durable import durable, stored
from zq.errors import InvalidArgument, StorageError, UnknownQueue
from zq.manage import manage as run_manage
from zq.protocol import frames as f

HISTORY, ORIGIN, REASON, DEAD_AT = "zq-history", "zq-origin", "zq-reason", "zq-dead-at"


@pytest.fixture
def h() -> Harness:
    h = Harness(heartbeat=600.0)  # nobody is dropped for silence while the clock jumps
    h.hello(P, A, B)
    return h


def manage(h: Harness, op: str, **args: Any) -> dict[str, Any]:
    return run_manage(h.core, f.Manage(0, op, args), h.now)


def declare(h: Harness, queue: str = "q", **settings: Any) -> dict[str, Any]:
    return manage(h, "declare", queue=queue, settings=settings)


def pub(h: Harness, *bodies: bytes, queue: str = "q", commit: bool = True,
        **opts: Any) -> int:
    """Publish ``bodies`` in one frame with these options; the seq."""
    h.seq += 1
    h.send(P, f.Publish(queue, h.seq, list(bodies), [], f.Options(**opts) if opts else None))
    if commit:
        h.core.committed()
    return h.seq


def one(h: Harness, who: bytes = A, queue: str = "q") -> f.Deliver | None:
    """Grant one credit and run a pass: the DELIVER it causes, if any (prefetch 1)."""
    h.send(who, f.Credit(queue, 1))
    ds = delivers(h.run())
    assert len(ds) <= 1
    if not ds:
        return None
    who_got, d = ds[0]
    assert who_got == who
    return d


def at(h: Harness, t: float) -> list[tuple[bytes, f.Frame]]:
    """Move the clock to ``t``, run timers and a dispatch; what was sent."""
    h.now = t
    h.core.tick(t)
    h.core.dispatch(t)
    return [(i, fr) for i, fr in h.take() if not isinstance(fr, f.Heartbeat)]


def peek(h: Harness, queue: str) -> list[dict[str, Any]]:
    return list(manage(h, "peek", queue=queue, limit=100)["messages"])


def held(h: Harness, who: bytes = A) -> int:
    return int(h.core.stats()["peers"][who.hex()]["held"])


# ------------------------------------------------------------------ delivery order


def test_priority_is_strict_and_fifo_within_a_level_at_prefetch_1(h: Harness) -> None:
    for body, prio in ((b"a0", 0), (b"b5", 5), (b"c9", 9), (b"d5", 5), (b"e0", 0),
                       (b"f9", 9)):
        pub(h, body, priority=prio)
    got = []
    d = one(h)
    assert d is not None
    got.append(d.bodies[0])
    pub(h, b"g7", priority=7)  # arrives later, still ahead of every lower priority
    h.send(A, f.Ack(d.ids, d.attempts))
    while (d := one(h)) is not None:
        got.append(d.bodies[0])
        h.send(A, f.Ack(d.ids, d.attempts))
    assert got == [b"c9", b"f9", b"g7", b"b5", b"d5", b"a0", b"e0"]


def test_a_requeued_message_keeps_its_priority(h: Harness) -> None:
    pub(h, b"low")
    pub(h, b"high", priority=3)
    d = one(h)
    assert d is not None
    assert d.bodies == [b"high"]
    h.send(A, f.Nack(d.ids, d.attempts))
    d = one(h)
    assert d is not None
    assert (d.bodies, d.attempts) == ([b"high"], [2])


def test_weighted_fair_share_is_3_to_1_over_1000_single_deliveries(h: Harness) -> None:
    reply = declare(h, weights={"a": 3, "b": 1})
    assert reply["created"] is True
    assert reply["settings"]["weights"] == {"a": 3, "b": 1}
    pub(h, *[b"a"] * 1000, tenant="a")
    pub(h, *[b"b"] * 1000, tenant="b")
    served = []
    for _ in range(1000):
        d = one(h)
        assert d is not None
        assert len(d.ids) == 1
        served.append(d.bodies[0].decode())
        h.send(A, f.Ack(d.ids, d.attempts))
    assert Counter(served) == {"a": 750, "b": 250}
    for k in range(0, 1000, 4):  # the share holds at every turn, not only on average
        assert Counter(served[k:k + 4]) == {"a": 3, "b": 1}, k
    tenants = h.core.stats()["queues"]["q"]["tenants"]
    assert tenants == {"a": {"in_flight": 0, "weight": 3, "cap": 0},
                       "b": {"in_flight": 0, "weight": 1, "cap": 0}}


def test_tenant_cap_is_never_exceeded(h: Harness) -> None:
    declare(h, caps={"a": 2})
    pub(h, *[b"a"] * 10, tenant="a")
    pub(h, *[b"a"] * 5, tenant="a", priority=9)  # the cap spans the tenant's priorities
    pub(h, *[b"b"] * 10, tenant="b")
    h.send(A, f.Credit("q", 20))
    h.send(B, f.Credit("q", 20))
    holding: dict[bytes, list[tuple[int, int, bytes]]] = {A: [], B: []}
    for who, d in delivers(h.run()):
        holding[who] += zip(d.ids, d.attempts, d.bodies, strict=True)

    def in_flight(tenant: bytes) -> int:
        return sum(1 for msgs in holding.values() for _, _, body in msgs if body == tenant)

    assert in_flight(b"a") == 2
    assert in_flight(b"b") == 10
    for step in range(13):  # settle one "a" at a time, in varied ways
        who = A if any(b == b"a" for _, _, b in holding[A]) else B
        i, att, _ = next(m for m in holding[who] if m[2] == b"a")
        holding[who] = [m for m in holding[who] if m[0] != i]
        if step % 3 == 0:
            h.send(who, f.Nack([i], [att]))
        else:
            h.send(who, f.Ack([i], [att]))
        h.send(who, f.Credit("q", 1))
        for who2, d in delivers(h.run()):
            holding[who2] += zip(d.ids, d.attempts, d.bodies, strict=True)
        assert in_flight(b"a") <= 2, step
        assert h.core.stats()["queues"]["q"]["tenants"]["a"]["in_flight"] == in_flight(b"a")
    assert in_flight(b"a") == 2  # and the cap is used, not just respected


# ------------------------------------------------------------------ delays and expiry


def test_delay_is_never_early(h: Harness) -> None:
    t0 = h.now
    h.send(A, f.Credit("q", 10))
    pub(h, b"later", delay_ms=500)
    assert delivers(h.run()) == []
    assert h.core.stats()["queues"]["q"]["delayed"] == 1
    assert delivers(at(h, t0 + 0.4999)) == []
    (_, d), = delivers(at(h, t0 + 0.5))
    assert (d.bodies, d.attempts) == ([b"later"], [1])
    assert h.core.stats()["queues"]["q"]["delayed"] == 0


def test_eta_is_never_early_and_the_later_of_eta_and_delay_wins(h: Harness) -> None:
    h.core.wall_offset = 1_700_000_000.0  # eta is wall-clock
    t0 = h.now
    wall_ms = int((t0 + h.core.wall_offset) * 1000)
    h.send(A, f.Credit("q", 10))
    pub(h, b"eta", eta_ms=wall_ms + 2000)
    pub(h, b"both", eta_ms=wall_ms + 1000, delay_ms=3000)
    pub(h, b"past", eta_ms=wall_ms - 5000)
    (_, d), = delivers(h.run())
    assert d.bodies == [b"past"]
    assert delivers(at(h, t0 + 1.999)) == []
    (_, d), = delivers(at(h, t0 + 2.0))
    assert d.bodies == [b"eta"]
    assert delivers(at(h, t0 + 2.999)) == []
    (_, d), = delivers(at(h, t0 + 3.0))
    assert d.bodies == [b"both"]


def test_ttl_expiry_moves_the_message_to_the_dlq_with_an_expired_entry(h: Harness) -> None:
    declare(h, "q.dlq")  # see test_background_expiry_into_a_new_dlq_does_not_crash
    t0 = h.now
    h.core.tick(t0)
    pub(h, b"short", ttl_ms=1000)
    pub(h, b"long", ttl_ms=60_000)
    at(h, t0 + 0.5)
    assert h.core.stats()["queues"]["q"]["ready"] == 2
    at(h, t0 + 2.0)  # no consumer: the broker's own check finds it
    assert h.core.stats()["queues"]["q"]["ready"] == 1
    assert h.core.counters["expired"] == 1
    (dead,) = peek(h, "q.dlq")
    assert dead["body"] == b"short"
    hdr = dead["headers"]
    assert (hdr[ORIGIN], hdr[REASON], hdr[DEAD_AT]) == ("q", "expired", t0 + 2.0)
    assert hdr[HISTORY] == [{"attempt": 0, "outcome": "expired", "end": t0 + 2.0}]
    d = one(h, queue="q.dlq")  # a dead letter is a message like any other
    assert d is not None
    assert (d.bodies, d.attempts, d.headers) == ([b"short"], [1], [hdr])


def test_an_expired_message_is_not_delivered(h: Harness) -> None:
    declare(h, ttl=1.0)  # the queue's TTL, for messages without ttl_ms
    h.core.tick(h.now)  # the once-a-second check ran; the next is not due before 1 s
    pub(h, b"m")
    h.now += 1.0
    h.send(A, f.Credit("q", 1), at=h.now)
    h.core.dispatch(h.now)  # the message is due to be delivered: it expires instead
    assert delivers(h.take()) == []
    assert [m["body"] for m in peek(h, "q.dlq")] == [b"m"]
    assert h.core.counters["expired"] == 1
    assert h.core.stats()["peers"][A.hex()]["subs"]["q"]["available"] == 1


# ------------------------------------------------------------------ failures and dead letters


@pytest.mark.parametrize("how", ["option", "setting"])
def test_max_attempts_dead_letters_after_exactly_n_nacks(h: Harness, how: str) -> None:
    if how == "option":
        pub(h, b"poison", max_attempts=3)
    else:
        declare(h, max_attempts=3)
        pub(h, b"poison")
    for n in range(1, 4):
        d = one(h)
        assert d is not None
        assert d.attempts == [n]
        history = (d.headers[0] or {}).get(HISTORY, []) if d.headers else []
        assert [e["attempt"] for e in history] == list(range(1, n))
        h.send(A, f.Nack(d.ids, d.attempts, reason=f"bad {n}"))
    assert one(h) is None
    q = h.core.stats()["queues"]["q"]
    assert (q["ready"], q["in_flight"], q["dead"], q["nacked"]) == (0, 0, 1, 3)
    (dead,) = peek(h, "q.dlq")
    hdr = dead["headers"]
    assert [(e["attempt"], e["outcome"], e["reason"], e["consumer"]) for e in hdr[HISTORY]] == [
        (1, "nacked", "bad 1", "consumer-a"), (2, "nacked", "bad 2", "consumer-a"),
        (3, "nacked", "bad 3", "consumer-a")]
    assert hdr[REASON] == "3 attempt(s) failed; last: bad 3"
    assert dead["attempts"] == 0


def test_nack_without_requeue_dead_letters_at_once(h: Harness) -> None:
    pub(h, b"m", max_attempts=10)
    d = one(h)
    assert d is not None
    h.send(A, f.Nack(d.ids, d.attempts, requeue=False, reason="cannot parse"))
    assert one(h) is None
    (dead,) = peek(h, "q.dlq")
    assert dead["id"] == d.ids[0]  # the same message, moved
    hdr = dead["headers"]
    assert (hdr[ORIGIN], hdr[REASON]) == ("q", "cannot parse")
    assert [(e["attempt"], e["outcome"]) for e in hdr[HISTORY]] == [(1, "nacked")]


def test_dead_letters_are_dropped_when_the_queue_has_no_dlq(h: Harness) -> None:
    declare(h, dlq="-")
    pub(h, b"m")
    d = one(h)
    assert d is not None
    h.send(A, f.Nack(d.ids, d.attempts, requeue=False))
    h.run()
    assert "q.dlq" not in h.core.queues
    assert h.core.stats()["queues"]["q"]["dead"] == 1


def test_time_limit_fails_the_attempt_and_the_late_ack_is_stale_but_frees_credit() -> None:
    h = Harness(heartbeat=600.0, max_credit=1)
    h.hello(P, A, B)
    t0 = h.now
    declare(h, time_limit=1.0)
    pub(h, b"slow")
    d = one(h)
    assert d is not None
    assert at(h, t0 + 0.999) == []
    assert h.core.counters["time_limited"] == 0
    at(h, t0 + 1.0)
    assert h.core.counters["time_limited"] == 1
    d2 = one(h, who=B)  # redelivered, with the failed attempt recorded
    assert d2 is not None
    assert (d2.ids, d2.attempts) == (d.ids, [2])
    assert d2.headers[0][HISTORY] == [{  # type: ignore[index]
        "attempt": 1, "outcome": "time limit", "start": t0, "end": t0 + 1.0,
        "consumer": "consumer-a", "reason": "ran past its time limit of 1.000s"}]
    # A still works on attempt 1: its unit of credit stays in flight until it settles.
    h.send(A, f.Credit("q", 1))
    assert only(h.take(), f.Error).name == "INVALID_CREDIT"
    h.send(A, f.Ack(d.ids, d.attempts))
    err = only(h.take(), f.Error)
    assert (err.name, err.op, err.ref) == ("STALE_DELIVERY", f.ACK, d.ids)
    assert h.core.counters["acked"] == 0
    assert held(h, B) == 1  # B's attempt is untouched
    assert h.core.stats()["peers"][A.hex()]["subs"]["q"]["in_flight"] == 0
    h.send(A, f.Credit("q", 1))  # the late ack gave the unit back
    assert errors_of(h.take()) == []
    h.send(B, f.Ack(d2.ids, d2.attempts))
    assert errors_of(h.run()) == []
    assert h.core.counters["acked"] == 1


def test_time_limit_from_the_publish_option(h: Harness) -> None:
    t0 = h.now
    pub(h, b"m", time_limit_ms=250)
    pub(h, b"no limit")
    h.send(A, f.Credit("q", 2))
    (_, d), = delivers(h.run())
    assert d.bodies == [b"m", b"no limit"]
    at(h, t0 + 100.0)
    assert h.core.counters["time_limited"] == 1
    assert held(h) == 1


def test_extend_postpones_the_time_limit(h: Harness) -> None:
    t0 = h.now
    declare(h, time_limit=1.0)
    pub(h, b"m")
    d = one(h)
    assert d is not None
    h.now = t0 + 0.8
    h.send(A, f.Extend(d.ids, d.attempts, 1000))
    assert h.take() == []
    at(h, t0 + 1.0)
    at(h, t0 + 1.799)
    assert h.core.counters["time_limited"] == 0
    assert held(h) == 1
    at(h, t0 + 1.8)
    assert h.core.counters["time_limited"] == 1
    assert held(h) == 0
    h.send(A, f.Extend(d.ids, d.attempts, 1000))  # too late: the lease has ended
    err = only(h.take(), f.Error)
    assert (err.name, err.op, err.ref) == ("STALE_DELIVERY", f.EXTEND, d.ids)


def test_extend_with_a_wrong_attempt_is_stale_and_extends_nothing(h: Harness) -> None:
    t0 = h.now
    declare(h, time_limit=1.0)
    pub(h, b"m")
    d = one(h)
    assert d is not None
    h.send(A, f.Extend(d.ids, [2], 60_000))
    assert only(h.take(), f.Error).name == "STALE_DELIVERY"
    at(h, t0 + 1.0)
    assert h.core.counters["time_limited"] == 1


def test_consumer_lost_is_recorded_in_the_history(h: Harness) -> None:
    t0 = h.now
    pub(h, b"m")
    d = one(h)
    assert d is not None
    h.now = t0 + 2.0
    h.send(A, f.Bye("leaving"))
    d2 = one(h, who=B)
    assert d2 is not None
    assert (d2.ids, d2.attempts) == (d.ids, [2])
    assert d2.headers[0][HISTORY] == [{  # type: ignore[index]
        "attempt": 1, "outcome": "consumer lost", "start": t0, "end": t0 + 2.0,
        "consumer": "consumer-a", "reason": "BYE leaving"}]


def test_a_lost_consumer_on_the_last_attempt_dead_letters(h: Harness) -> None:
    pub(h, b"m", max_attempts=1)
    assert one(h) is not None
    h.send(A, f.Bye())
    assert one(h, who=B) is None
    (dead,) = peek(h, "q.dlq")
    assert dead["headers"][REASON] == "1 attempt(s) failed; last: consumer lost"


def test_ack_from_a_dropped_session_is_stale_then_session_unknown() -> None:
    h = Harness(heartbeat=1.0, liveness=2)
    h.hello(P, A)
    pub(h, b"x", b"y")
    h.send(A, f.Credit("q", 5))
    (_, d), = delivers(h.run())
    h.core.tick(h.now + 3.0)  # A fell silent
    assert A not in h.core.peers
    never = h.core.next_id  # never assigned
    for frame, op in ((f.Ack([*d.ids, never], [*d.attempts, 1]), f.ACK),
                      (f.Nack(d.ids, d.attempts), f.NACK),
                      (f.Extend(d.ids, d.attempts, 1000), f.EXTEND)):
        h.send(A, frame, at=h.now + 3.0)
        errs = [(e.name, e.op, e.ref) for _, e in errors_of(h.take())]
        stale = [("STALE_DELIVERY", op, d.ids)]
        unknown = [("UNKNOWN_DELIVERY", op, [never])] if op == f.ACK else []
        assert errs == [*stale, *unknown, ("SESSION_UNKNOWN", op, None)]
    assert h.core.counters["acked"] == h.core.counters["nacked"] == 0
    assert h.core.stats()["queues"]["q"]["ready"] == 2  # requeued by the drop, untouched


def test_ack_in_a_new_session_for_an_old_delivery_is_stale(h: Harness) -> None:
    pub(h, b"m")
    d = one(h)
    assert d is not None
    h.send(A, f.Bye())
    h.hello(A)
    h.send(A, f.Ack(d.ids, d.attempts))
    assert only(h.take(), f.Error).name == "STALE_DELIVERY"
    d2 = one(h, who=B)
    assert d2 is not None
    assert d2.attempts == [2]


# ------------------------------------------------------------------ publish options


def test_bad_publish_option_is_invalid_argument_and_not_fatal(h: Harness) -> None:
    h.seq += 1
    h.send(P, [b"ZQ\x01\x10", b"q", b"\x93\x05\x90\x81\xa8priority\x0a", b"b"])  # priority 10
    err = only(h.run(), f.Error)
    assert (err.name, err.code, err.op, err.ref) == ("INVALID_ARGUMENT", 16, f.PUBLISH, 5)
    assert P in h.core.peers
    assert "q" not in h.core.queues or h.core.stats()["queues"]["q"]["ready"] == 0


def test_dedup_confirms_the_first_id_and_stores_once() -> None:
    h = durable()
    first = pub(h, b"once", dedup_id="k", commit=False)
    batch = h.core.take_batch()
    assert [e[0] for e in batch.inserts] == [1]
    assert [(q, k, mid) for q, k, mid, _ in batch.dedups] == [("q", "k", 1)]
    h.core.committed()
    second = pub(h, b"twice", dedup_id="k", commit=False)
    other = pub(h, b"other", dedup_id="k2", commit=False)
    batch = h.core.take_batch()
    assert [e[0] for e in batch.inserts] == [2]  # only "other"
    h.core.committed()
    confirms = [e for _, fr in h.take() if isinstance(fr, f.Confirm) for e in fr.entries]
    assert confirms == [(first, 1, 1), (second, 1, 1), (other, 2, 1)]
    assert h.core.counters["deduplicated"] == 1
    assert h.core.stats()["queues"]["q"]["ready"] == 2


def test_dedup_forgets_a_key_after_its_window(h: Harness) -> None:
    declare(h, dedup_window=10.0)
    t0 = h.now
    ids = []
    for t in (t0, t0 + 9.0, t0 + 10.5):
        at(h, t)
        pub(h, b"a", dedup_id="k")
        ids += [mid for _, fr in h.take() if isinstance(fr, f.Confirm)
                for _, mid, _ in fr.entries]
    assert ids == [1, 1, 2]
    assert h.core.stats()["queues"]["q"]["ready"] == 2


def test_queue_full_with_reject(h: Harness) -> None:
    declare(h, max_length=3)
    pub(h, b"1", b"2")
    seq = pub(h, b"3", b"4")
    err = only(h.take(), f.Error)
    assert (err.name, err.code, err.op, err.ref) == ("QUEUE_FULL", 14, f.PUBLISH, seq)
    assert P in h.core.peers
    assert h.core.stats()["queues"]["q"]["ready"] == 2  # nothing of it was stored
    pub(h, b"3", delay_ms=60_000)  # delayed messages count too
    pub(h, b"4")
    assert only(h.take(), f.Error).name == "QUEUE_FULL"
    h.send(A, f.Credit("q", 2))
    assert len(only(h.run(), f.Deliver).ids) == 2
    pub(h, b"5", b"6")  # in-flight messages do not count
    assert only(h.take(), f.Confirm).entries[0][2] == 2


def test_drop_oldest_moves_the_oldest_to_the_dlq(h: Harness) -> None:
    declare(h, max_length=3, overflow="drop-oldest")
    pub(h, b"1", b"2", b"3")
    h.take()
    pub(h, b"4", b"5")
    assert isinstance(only(h.take(), f.Confirm), f.Confirm)
    assert [m["body"] for m in peek(h, "q")] == [b"3", b"4", b"5"]
    dead = peek(h, "q.dlq")
    assert [m["body"] for m in dead] == [b"1", b"2"]
    for m in dead:
        hdr = m["headers"]
        assert hdr[REASON] == "overflow: the queue was at its maximum length"
        assert [(e["outcome"], e["reason"]) for e in hdr[HISTORY]] == [("dropped", "queue full")]
    pub(h, b"a", b"b", b"c", b"d")  # more than max_length: a ring buffer keeps the newest
    assert isinstance(only(h.take(), f.Confirm), f.Confirm)
    assert [m["body"] for m in peek(h, "q")] == [b"b", b"c", b"d"]
    assert [m["body"] for m in peek(h, "q.dlq")] == [b"1", b"2", b"3", b"4", b"5", b"a"]


def test_drop_oldest_counts_delayed_messages_as_the_oldest(h: Harness) -> None:
    declare(h, max_length=2, overflow="drop-oldest")
    pub(h, b"later-1", delay_ms=60_000)
    pub(h, b"later-2", delay_ms=60_000)
    pub(h, b"now")
    assert [m["body"] for m in peek(h, "q.dlq")] == [b"later-1"]
    assert [m["body"] for m in peek(h, "q")] == [b"now"]
    assert h.core.stats()["queues"]["q"]["delayed"] == 1
    at(h, h.now + 61.0)
    assert sorted(m["body"] for m in peek(h, "q")) == [b"later-2", b"now"]


def test_redrive_stops_at_the_target_max_length(h: Harness) -> None:
    declare(h, max_attempts=1)
    pub(h, b"1", b"2", b"3")
    for _ in range(3):
        d = one(h)
        assert d is not None
        h.send(A, f.Nack(d.ids, d.attempts))
    assert len(peek(h, "q.dlq")) == 3
    declare(h, max_length=2)
    result = manage(h, "redrive", queue="q.dlq")
    assert (result["moved"], result["full"]) == (2, ["q"])
    assert len(peek(h, "q.dlq")) == 1
    [entry] = [e for e in peek(h, "q")[0]["headers"][HISTORY] if e["outcome"] == "redriven"]
    assert entry["reason"] == "from q.dlq"


# ------------------------------------------------------------------ MANAGE operations


def test_pause_stops_dispatch_and_resume_restarts_it(h: Harness) -> None:
    declare(h)
    h.send(A, f.Credit("q", 5))
    assert manage(h, "pause", queue="q") == {"queue": "q", "paused": True}
    pub(h, b"m")
    assert delivers(h.run()) == []
    assert h.core.stats()["queues"]["q"]["paused"] is True
    assert manage(h, "resume", queue="q") == {"queue": "q", "paused": False}
    (_, d), = delivers(h.run())
    assert d.bodies == [b"m"]


def test_manage_frames_get_a_reply_or_an_error_naming_req(h: Harness) -> None:
    h.send(P, f.Manage(5, "pause", {"queue": "nope"}))
    h.send(P, f.Manage(6, "explode", {}))
    h.send(P, f.Manage(7, "declare", {"queue": "q", "settings": {"max_length": -1}}))
    h.send(P, f.Manage(8, "declare", {"queue": "q", "settings": {"colour": "red"}}))
    h.send(P, f.Manage(9, "info", {"queue": "q"}))
    out = h.run()
    assert [(e.name, e.code, e.op, e.ref) for _, e in errors_of(out)] == [
        ("UNKNOWN_QUEUE", 15, f.MANAGE, 5), ("INVALID_ARGUMENT", 16, f.MANAGE, 6),
        ("INVALID_ARGUMENT", 16, f.MANAGE, 7), ("INVALID_ARGUMENT", 16, f.MANAGE, 8),
        ("UNKNOWN_QUEUE", 15, f.MANAGE, 9)]
    assert "q" not in h.core.queues  # a refused declare creates nothing
    assert P in h.core.peers
    h.send(P, f.Manage(10, "declare", {"queue": "q", "settings": {"max-length": 4}}))
    reply = only(h.run(), f.ManageReply)
    assert (reply.req, reply.result["created"], reply.result["settings"]["max_length"]) == (
        10, True, 4)
    h.send(P, f.Manage(11, "declare", {"queue": "q", "settings": {"ttl": 5}}))
    reply = only(h.run(), f.ManageReply)
    assert (reply.result["created"], reply.result["settings"]["max_length"],
            reply.result["settings"]["ttl"]) == (False, 4, 5.0)  # other settings stay


def test_manage_reply_waits_for_the_commit_of_what_came_before() -> None:
    h = durable()
    h.send(P, f.Publish("q", 1, [b"m"]))
    h.send(P, f.Manage(2, "sync", {}))
    assert h.take() == []  # nothing is stored yet
    out = stored(h)
    assert [type(fr) for _, fr in out] == [f.Confirm, f.ManageReply]
    assert only(out, f.ManageReply) == f.ManageReply(2, {})


def test_declare_settings_are_staged_for_the_store() -> None:
    h = durable()
    declare(h, max_length=7)
    manage(h, "pause", queue="q")
    batch = h.core.take_batch()
    assert [name for name, _ in batch.settings] == ["q", "q"]
    assert all(blob is not None for _, blob in batch.settings)


def test_purge_removes_ready_and_delayed_but_not_in_flight(h: Harness) -> None:
    pub(h, b"held")
    d = one(h)
    assert d is not None
    pub(h, b"r1", b"r2", b"r3")
    pub(h, b"later", delay_ms=60_000)
    assert manage(h, "purge", queue="q") == {"queue": "q", "purged": 4}
    q = h.core.stats()["queues"]["q"]
    assert (q["ready"], q["delayed"], q["in_flight"]) == (0, 0, 1)
    at(h, h.now + 120.0)
    assert one(h, who=B) is None  # the delayed one does not come back
    h.send(A, f.Ack(d.ids, d.attempts))
    assert errors_of(h.run()) == []


def test_delete_removes_everything_and_the_old_leases_are_stale(h: Harness) -> None:
    pub(h, b"held")
    d = one(h)
    assert d is not None
    pub(h, b"ready")
    assert manage(h, "delete", queue="q") == {"queue": "q", "deleted": 2, "unbound": 0}
    h.send(A, f.Ack(d.ids, d.attempts))
    assert only(h.take(), f.Error).name == "STALE_DELIVERY"
    assert h.core.stats()["peers"][A.hex()]["subs"]["q"]["in_flight"] == 0
    pub(h, b"new")  # the queue starts again, and A's subscription still works
    d2 = one(h)
    assert d2 is not None
    assert d2.bodies == [b"new"]
    with pytest.raises(UnknownQueue):
        manage(h, "delete", queue="nothing")


def test_redrive_moves_dead_letters_back_to_their_origin(h: Harness) -> None:
    for reason in ("bad json", "timeout", "bad json"):
        pub(h, reason.encode())
        d = one(h)
        assert d is not None
        h.send(A, f.Nack(d.ids, d.attempts, requeue=False, reason=reason))
    h.run()
    assert len(peek(h, "q.dlq")) == 3
    result = manage(h, "redrive", queue="q.dlq", match="json", limit=1)
    assert result == {"queue": "q.dlq", "moved": 1, "left_on_disk": 0, "full": []}
    assert manage(h, "redrive", queue="q.dlq", match="json") == {
        "queue": "q.dlq", "moved": 1, "left_on_disk": 0, "full": []}
    assert [m["body"] for m in peek(h, "q.dlq")] == [b"timeout"]
    back = peek(h, "q")
    assert [m["body"] for m in back] == [b"bad json", b"bad json"]
    for m in back:  # origin, reason and death time go; the history stays
        assert set(m["headers"]) == {HISTORY}
        assert m["attempts"] == 0
    d = one(h)
    assert d is not None
    assert d.attempts == [1]
    assert manage(h, "redrive", queue="q.dlq", to="elsewhere")["moved"] == 1
    assert [m["body"] for m in peek(h, "elsewhere")] == [b"timeout"]
    with pytest.raises(InvalidArgument):
        manage(h, "redrive", queue="q.dlq", limit=-1)


def test_peek_shows_without_delivering(h: Harness) -> None:
    pub(h, b"a", b"b", b"c")
    pub(h, b"first", priority=1)
    result = manage(h, "peek", queue="q", limit=2)
    assert [m["body"] for m in result["messages"]] == [b"first", b"a"]
    assert result["ready"] == 4
    assert result["messages"][0] == {"id": 4, "attempts": 0, "headers": {}, "body": b"first"}
    assert h.core.counters["delivered"] == 0
    for bad in (0, 101, "3"):
        with pytest.raises(InvalidArgument):
            manage(h, "peek", queue="q", limit=bad)


# ------------------------------------------------------- bugs found in review, now fixed


def test_background_expiry_into_a_new_dlq_does_not_crash(h: Harness) -> None:
    t0 = h.now
    h.core.tick(t0)
    pub(h, b"m", ttl_ms=1000)
    at(h, t0 + 2.0)
    assert [m["body"] for m in peek(h, "q.dlq")] == [b"m"]


def test_a_declare_keeps_the_time_limit_of_messages_published_with_one(h: Harness) -> None:
    pub(h, b"m", time_limit_ms=1000)
    declare(h, max_length=100)
    assert one(h) is not None
    at(h, h.now + 5.0)
    assert h.core.counters["time_limited"] == 1


def test_a_duplicate_of_a_refused_publish_is_not_confirmed_with_its_id() -> None:
    h = durable()
    pub(h, b"m", dedup_id="k", commit=False)
    c1 = h.core.take_commit()  # being stored
    pub(h, b"m", dedup_id="k", commit=False)  # a retry, while it is
    h.core.commit_failed(StorageError("io"), c1.pending)
    h.take()
    c2 = h.core.take_commit()
    h.core.committed(c2.pending)
    confirms = [e for _, fr in h.take() if isinstance(fr, f.Confirm) for e in fr.entries]
    assert c2.batch.inserts or not confirms, (confirms, "confirmed, nothing stored")


def test_a_message_confirmed_after_its_queue_was_deleted_is_delivered(h: Harness) -> None:
    declare(h)
    pub(h, b"m", commit=False)
    manage(h, "delete", queue="q")
    h.core.committed()
    assert [fr for _, fr in h.take() if isinstance(fr, f.Confirm)]
    d = one(h)
    assert d is not None


def test_manage_reply_follows_earlier_confirms_without_a_durable_store(h: Harness) -> None:
    h.send(P, f.Publish("q", 1, [b"m"]))
    h.send(P, f.Manage(2, "sync", {}))
    assert [type(fr) for _, fr in h.run()] == [f.Confirm, f.ManageReply]


def test_time_limit_entries_of_settled_attempts_do_not_pile_up(h: Harness) -> None:
    """Each time-limited delivery leaves an entry in the timer heap until its
    deadline; acked early, they would pile up for ``time_limit`` seconds. The heap is
    compacted when it outgrows the live attempts, so it stays bounded."""
    declare(h, time_limit=100.0)
    for _ in range(300):
        pub(h, *[b"m"] * 100)
        h.send(A, f.Credit("q", 100))
        for _, d in delivers(h.run()):
            h.send(A, f.Ack(d.ids, d.attempts))
    assert h.core.counters["acked"] == 30_000
    assert len(h.core._limits) <= 10_100  # without compaction: 30,000
    pub(h, b"last")
    h.send(A, f.Credit("q", 1))
    [(_, d)] = delivers(h.run())
    at(h, h.now + 101.0)
    assert h.core.counters["time_limited"] == 1  # the live attempt's entry survived


def test_a_queue_cannot_be_its_own_dlq_and_counts_are_bounded(h: Harness) -> None:
    with pytest.raises(InvalidArgument, match="own dead-letter queue"):
        declare(h, "loop", dlq="loop")
    with pytest.raises(InvalidArgument, match="max_length"):
        declare(h, max_length=2**70)
    declare(h)
    with pytest.raises(InvalidArgument, match="limit"):
        manage(h, "redrive", queue="q", limit=2**70)
    assert "loop" not in h.core.queues


def test_tenant_counts_start_when_a_cap_is_declared_with_messages_in_flight(
        h: Harness) -> None:
    """Per-tenant in-flight counts are kept only once a queue caps a tenant; a cap
    declared while messages are in flight counts them afresh, and holds."""
    pub(h, *[b"a"] * 3, tenant="a")
    pub(h, *[b"a"] * 3, tenant="a")
    h.send(A, f.Credit("q", 2))
    assert sum(len(d.ids) for _, d in delivers(h.run())) == 2
    assert h.core.stats()["queues"]["q"]["tenants"]["a"]["in_flight"] == 2  # by scan
    declare(h, caps={"a": 3})
    assert h.core.track_tenants
    assert h.core.stats()["queues"]["q"]["tenants"]["a"]["in_flight"] == 2
    h.send(A, f.Credit("q", 5))
    assert sum(len(d.ids) for _, d in delivers(h.run())) == 1  # up to the cap of 3
    assert h.core.stats()["queues"]["q"]["tenants"]["a"]["in_flight"] == 3
