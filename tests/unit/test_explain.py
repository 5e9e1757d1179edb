"""MANAGE explain without I/O: every place a message can be, and the reason given for it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.unit.test_core import A, B, Harness, P, delivers
from tests.unit.test_core_durable import durable
from zq.core.model import MoveOut, Msg
from zq.errors import InvalidArgument
from zq.manage import manage as run_manage
from zq.protocol import codec
from zq.protocol import frames as f

WALL = 1_700_000_000.0  # what the shell's wall_offset makes of monotonic 0


@pytest.fixture
def h() -> Harness:
    h = Harness(heartbeat=600.0)  # nobody is dropped for silence while the clock jumps
    h.core.wall_offset = WALL
    h.hello(P, A, B)
    return h


def manage(h: Harness, op: str, **args: Any) -> dict[str, Any]:
    return run_manage(h.core, f.Manage(0, op, args), h.now)


def explain(h: Harness, mid: int, at: float | None = None) -> dict[str, Any]:
    reply = run_manage(h.core, f.Manage(0, "explain", {"id": mid}),
                       h.now if at is None else at)
    assert reply is not None
    assert reply["id"] == mid, reply
    assert reply["reason"], reply
    json.dumps(reply)  # JSON-able, and it travels in a MANAGE_REPLY as it is
    assert codec.decode(codec.encode(f.ManageReply(0, reply))) == f.ManageReply(0, reply)
    return reply


def declare(h: Harness, queue: str = "q", **settings: Any) -> None:
    manage(h, "declare", queue=queue, settings=settings)


def pub(h: Harness, *bodies: bytes, queue: str = "q", commit: bool = True, **opts: Any) -> int:
    """Publish ``bodies`` in one frame with these options; the first id."""
    first = h.core.next_id
    h.seq += 1
    h.send(P, f.Publish(queue, h.seq, list(bodies), [], f.Options(**opts) if opts else None))
    if commit:
        h.core.committed()
    h.take()
    return first


def deliver(h: Harness, who: bytes = A) -> f.Deliver:
    h.core.dispatch()
    [(identity, d)] = delivers(h.take())
    assert identity == who
    return d


# ------------------------------------------------------------------ not found


def test_an_id_never_issued_says_so(h: Harness) -> None:
    for mid in (0, 1, 99):
        r = explain(h, mid)
        assert (r["state"], r["never_issued"]) == ("not_found", True)
        assert f"No message {mid} was ever published to this broker" in r["reason"]
    pub(h, b"x")
    assert "1 to 1" in explain(h, 2)["reason"]


def test_an_acked_message_is_not_found(h: Harness) -> None:
    h.send(A, f.Credit("q", 1))
    mid = pub(h, b"x")
    d = deliver(h)
    h.send(A, f.Ack(d.ids, d.attempts))
    r = explain(h, mid)
    assert (r["state"], r["never_issued"]) == ("not_found", False)
    assert "acked, expired" in r["reason"]


def test_a_kept_outcome_says_who_acked_it(h: Harness) -> None:
    declare(h, result_ttl=60.0)
    h.send(A, f.Credit("q", 1))
    mid = pub(h, b"x")
    d = deliver(h)
    h.send(A, f.Ack(d.ids, d.attempts))
    r = explain(h, mid)
    assert (r["state"], r["outcome"], r["consumer"], r["attempt"]) == (
        "not_found", "succeeded", "consumer-a", 1)
    assert "succeeded: acked by 'consumer-a'" in r["reason"]


def test_a_message_dead_without_a_dlq_is_dead_by_its_outcome(h: Harness) -> None:
    declare(h, result_ttl=60.0, dlq="-", max_attempts=1)
    h.send(A, f.Credit("q", 1))
    mid = pub(h, b"x")
    d = deliver(h)
    h.send(A, f.Nack(d.ids, d.attempts, True, 0, "boom"))
    r = explain(h, mid)
    assert (r["state"], r["queue"], r["attempts"]) == ("dead", "q", 1)
    assert "boom" in r["dead_reason"]
    assert "no dead-letter queue" in r["reason"]


def test_bad_ids_are_refused(h: Harness) -> None:
    for bad in (-1, "1", 1.0, True, None, 1 << 63):
        with pytest.raises(InvalidArgument, match="id must be"):
            run_manage(h.core, f.Manage(0, "explain", {"id": bad}), h.now)


# ------------------------------------------------------------------ delayed


def test_delayed_until_its_due_time(h: Harness) -> None:
    mid = pub(h, b"x", delay_ms=5000)
    r = explain(h, mid)
    assert (r["state"], r["queue"], r["attempt"]) == ("delayed", "q", 0)
    assert r["due"] == pytest.approx(WALL + h.now + 5.0)
    assert "Delayed until" in r["reason"]
    assert "in 5.0 s" in r["reason"]


def test_a_retry_after_a_backoff_names_the_failure(h: Harness) -> None:
    declare(h, retry_delay=30.0, retry="fixed")
    h.send(A, f.Credit("q", 1))
    mid = pub(h, b"x")
    d = deliver(h)
    h.send(A, f.Nack(d.ids, d.attempts, True, 0, "db down"))
    r = explain(h, mid)
    assert (r["state"], r["attempt"], r["last_error"]) == ("delayed", 1, "db down")
    assert r["due"] == pytest.approx(WALL + h.now + 30.0, abs=3.1)
    assert "attempt 1 failed (db down)" in r["reason"]


# ------------------------------------------------------------------ ready


def test_ready_without_consumers(h: Harness) -> None:
    first = pub(h, b"a", b"b", b"c")
    r = explain(h, first + 2)
    assert (r["state"], r["why"], r["ahead"], r["attempt"]) == ("ready", "no_consumers", 2, 0)
    assert r["published_at"] == pytest.approx(WALL + h.now)
    assert "no consumer is subscribed" in r["reason"]


def test_ready_in_a_paused_queue(h: Harness) -> None:
    h.send(A, f.Credit("q", 5))
    mid = pub(h, b"x")
    manage(h, "pause", queue="q")
    r = explain(h, mid)
    assert (r["state"], r["why"]) == ("ready", "paused")
    assert "zq queue resume q" in r["reason"]


def test_every_consumer_at_its_credit_limit_is_named(h: Harness) -> None:
    h.send(A, f.Credit("q", 1))
    h.send(B, f.Credit("q", 1))
    first = pub(h, b"a", b"b", b"c")
    h.core.dispatch()
    assert len(delivers(h.take())) == 2
    r = explain(h, first + 2)
    assert (r["state"], r["why"], r["consumers_total"]) == (
        "ready", "consumers_at_credit_limit", 2)
    assert sorted(c["consumer"] for c in r["consumers"]) == ["consumer-a", "consumer-b"]
    assert all((c["in_flight"], c["available"]) == (1, 0) for c in r["consumers"])
    assert "'consumer-a' (1 in flight)" in r["reason"]


def test_a_tenant_at_its_cap(h: Harness) -> None:
    declare(h, caps={"acme": 1})
    h.send(A, f.Credit("q", 5))
    first = pub(h, b"a", b"b", tenant="acme")
    deliver(h)
    r = explain(h, first + 1)
    assert (r["state"], r["why"], r["tenant"], r["cap"], r["in_flight"]) == (
        "ready", "tenant_at_cap", "acme", 1, 1)
    assert "--cap acme=N" in r["reason"]


def test_ready_with_credit_goes_out_on_the_next_pass(h: Harness) -> None:
    h.send(A, f.Credit("q", 5))
    low = pub(h, b"low")
    high = pub(h, b"high", priority=5)
    r = explain(h, low)
    assert (r["state"], r["why"], r["ahead"]) == ("ready", "dispatching", 1)  # behind high
    assert explain(h, high)["priority"] == 5
    assert "next delivery pass" in r["reason"]


def test_behind_suspects_and_a_suspect_itself(h: Harness) -> None:
    h.send(A, f.Credit("q", 2))
    first = pub(h, b"a", b"b", b"c")
    deliver(h)
    h.core.drop_peer(h.core.peers[A], "gone")  # its two come back as suspects
    h.send(B, f.Credit("q", 5))
    r = explain(h, first + 2)
    assert (r["why"], r["suspects"]) == ("behind_suspects", 2)
    assert explain(h, first)["suspect"] is True


def test_expired_and_too_large_ones_go_at_the_next_pass(h: Harness) -> None:
    mid = pub(h, b"x", ttl_ms=1000)
    r = explain(h, mid, at=h.now + 2)
    assert (r["why"], r["expires"]) == ("expired", pytest.approx(WALL + h.now + 1.0))
    q = h.core.queues["q"]
    big = Msg(h.core.next_id, q, b"x" * (h.core.cfg.max_frame + 1), None, t=h.now)
    h.core.next_id += 1
    q.default.msgs.append(big)  # stored under larger limits
    r = explain(h, big.id)
    assert (r["why"], r["max_frame"]) == ("too_large", h.core.cfg.max_frame)
    assert "--max-frame" in r["reason"]


def test_a_queue_being_moved_away(h: Harness) -> None:
    mid = pub(h, b"x")
    h.core.queues["q"].moving = MoveOut("q", "b2", "tcp://b2:5555", "m1", "ship", WALL)
    r = explain(h, mid)
    assert (r["why"], r["to"], r["endpoint"]) == ("moving", "b2", "tcp://b2:5555")


def test_on_disk_past_the_window() -> None:
    h = durable(window=2)
    h.core.wall_offset = WALL
    h.publish(2)
    h.publish(2)  # the window is full: 3 and 4 stay on disk
    h.take()
    r = explain(h, 4)
    assert (r["state"], r["why"], r["queue"], r["ahead_at_least"]) == (
        "ready", "on_disk", "q", 2)
    assert "paged in as the queue drains" in r["reason"]
    assert explain(h, 2)["why"] == "no_consumers"  # in memory


# ------------------------------------------------------------------ in flight


def test_in_flight_at_a_consumer_with_its_time_limit(h: Harness) -> None:
    declare(h, time_limit=30.0)
    h.send(A, f.Credit("q", 1))
    mid = pub(h, b"x")
    deliver(h)
    r = explain(h, mid, at=h.now + 1)
    assert (r["state"], r["queue"], r["consumer"], r["attempt"]) == (
        "in_flight", "q", "consumer-a", 1)
    assert (r["alive"], r["heartbeats"], r["started"]) == (True, True, False)
    assert r["deadline"] == pytest.approx(WALL + h.now + 30.0)
    assert r["since"] == pytest.approx(WALL + h.now)
    assert "held while consumer-a heartbeats" in r["reason"]
    assert "time limit runs out" in r["reason"]
    assert "in 29.0 s" in r["reason"]


def test_in_flight_at_a_silent_consumer() -> None:
    h = Harness(heartbeat=1.0, liveness=3)
    h.hello(P, A)
    h.send(A, f.Credit("q", 1))
    mid = pub(h, b"x")
    deliver(h)
    r = explain(h, mid, at=h.now + 5)
    assert (r["state"], r["alive"], r["liveness_s"]) == ("in_flight", False, 3.0)
    assert "past its liveness" in r["reason"]
    assert "no time limit" in r["reason"]


# ------------------------------------------------------------------ not stored yet


def test_waiting_for_the_commit(h: Harness) -> None:
    h.core.durable = True
    mid = pub(h, b"a", b"b", commit=False)
    r = explain(h, mid + 1)
    assert (r["state"], r["queue"]) == ("committing", "q")
    assert "waiting for the next commit" in r["reason"]
    c = h.core.take_commit()
    assert "commit under way" in explain(h, mid)["reason"]
    h.core.committed(c.pending)
    assert explain(h, mid)["state"] == "ready"


def test_waiting_for_the_standby(h: Harness) -> None:
    h.core.durable = True
    mid = pub(h, b"a", commit=False)
    c = h.core.take_commit()
    h.core.stored_awaiting(c.pending)
    r = explain(h, mid)
    assert r["state"] == "replicating"
    assert "HA standby" in r["reason"]
    h.core.replicated(c.pending)
    assert explain(h, mid)["state"] == "ready"


# ------------------------------------------------------------------ dead letters


def test_dead_lettered_after_its_attempts_with_the_last_reason(h: Harness) -> None:
    declare(h, max_attempts=2)
    mid = pub(h, b"x")
    for reason in ("first", "second"):
        h.send(A, f.Credit("q", 1))  # credit is used by a delivery, granted again
        d = deliver(h)
        h.send(A, f.Nack(d.ids, d.attempts, True, 0, reason))
    r = explain(h, mid)
    assert (r["state"], r["queue"], r["origin"], r["attempts"]) == ("dead", "q.dlq", "q", 2)
    assert r["last_error"] == "second"
    assert r["dead_reason"] == "2 attempt(s) failed; last: second"
    assert r["dead_at"] == pytest.approx(WALL + h.now)
    assert r["reason"].startswith(
        "Dead-lettered from queue 'q': 2 attempt(s) failed; last: second.")
    assert "zq dlq redrive q.dlq" in r["reason"]
    h.send(B, f.Credit("q.dlq", 1))  # consumed from the DLQ: in flight, still its origin
    deliver(h, B)
    r = explain(h, mid)
    assert (r["state"], r["queue"], r["origin"]) == ("in_flight", "q.dlq", "q")


def test_a_dead_letter_of_another_cause_says_it(h: Harness) -> None:
    mid = pub(h, b"x", ttl_ms=1000)
    h.core.tick(h.now + 2)  # the sweep: expired, dead-lettered
    r = explain(h, mid, at=h.now + 2)
    assert (r["state"], r["origin"], r["dead_reason"]) == ("dead", "q", "expired")
    assert r["reason"].startswith("Dead-lettered from queue 'q': expired.")
    h.send(A, f.Credit("q", 1))
    mid = pub(h, b"y")
    d = deliver(h)
    h.send(A, f.Nack(d.ids, d.attempts, False, 0, "bad input"))  # no requeue: dead at once
    r = explain(h, mid)
    assert r["reason"].startswith("Dead-lettered from queue 'q': after 1 attempt(s), bad input.")
