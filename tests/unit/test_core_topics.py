"""Topics in the broker's core (zq.core.topics, zq.manage.topics), no I/O: bindings,
one copy per matching queue in one commit, one confirm, unroutable publishes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_core import A, Harness, P, delivers, errors_of, only
from zq.errors import StorageFull
from zq.persistence.sqlite import SqliteStore
from zq.protocol import frames as f

REQ = iter(range(1000, 10**6))


def manage(h: Harness, op: str, **args: Any) -> dict[str, Any]:
    req = next(REQ)
    h.send(P, f.Manage(req, op, args))
    if h.core.durable:  # the reply waits for its commit
        c = h.core.take_commit()
        h.core.committed(c.pending)
        h.core.release(c.deliveries)
    else:
        h.core.committed()
    out = h.take()
    for _, fr in out:
        if isinstance(fr, f.ManageReply) and fr.req == req:
            return dict(fr.result)
        if isinstance(fr, f.Error) and fr.ref == req:
            raise AssertionError(f"{op}: {fr.name} {fr.text}")
    raise AssertionError(f"no reply to {op}: {out}")


def topic_publish(h: Harness, key: str, bodies: list[bytes], topic: str = "orders",
                  **opts: Any) -> int:
    h.seq += 1
    h.send(P, f.Publish(topic, h.seq, bodies, [], f.Options(key=key, **opts)))
    return h.seq


def five(h: Harness) -> None:
    """3 exact bindings, 2 patterns (acceptance 1's shape)."""
    manage(h, "bind", topic="orders", queue="eu-paid", pattern="orders.eu.paid")
    manage(h, "bind", topic="orders", queue="us-paid", pattern="orders.us.paid")
    manage(h, "bind", topic="orders", queue="eu-new", pattern="orders.eu.new")
    manage(h, "bind", topic="orders", queue="eu-all", pattern="orders.eu.#")
    manage(h, "bind", topic="orders", queue="any-paid", pattern="orders.*.paid")


def ready(h: Harness) -> dict[str, int]:
    return {n: q["ready"] for n, q in h.core.stats()["queues"].items() if q["ready"]}


def test_each_matching_queue_gets_one_copy_in_one_commit_with_one_confirm() -> None:
    h = Harness()
    h.core.durable = True
    h.hello(P, A)
    five(h)
    seq = topic_publish(h, "orders.eu.paid", [b"a", b"b"])
    batch = h.core.take_commit()
    assert sorted(q for _, q, _, _ in batch.batch.inserts) == ["any-paid", "eu-all",
                                                               "eu-paid"]
    h.core.committed(batch.pending)
    h.core.release(batch.deliveries)
    (confirm,) = [fr for _, fr in h.take() if isinstance(fr, f.Confirm)]
    first = confirm.entries[0][1]
    assert confirm.entries == [(seq, first, 2)]
    ids = {q: first_id for first_id, q, _, _ in batch.batch.inserts}
    assert ids == {"any-paid": first, "eu-all": first + 2, "eu-paid": first + 4}  # by name
    assert ready(h) == {"any-paid": 2, "eu-all": 2, "eu-paid": 2}
    topic_publish(h, "orders.us.paid", [b"c"])
    topic_publish(h, "orders.eu", [b"d"])  # '#' takes no word too
    topic_publish(h, "orders.eu.new.x", [b"e"])
    c = h.core.take_commit()
    h.core.committed(c.pending)
    assert ready(h) == {"any-paid": 3, "eu-all": 4, "eu-paid": 2, "us-paid": 1}
    h.send(A, f.Credit("eu-all", 10))
    h.core.dispatch()
    (d,) = delivers(h.take())
    assert d[1].bodies == [b"a", b"b", b"d", b"e"]


def test_a_queue_bound_twice_gets_one_copy_and_empty_keys_only_catch_alls() -> None:
    h = Harness()
    h.hello(P)
    manage(h, "bind", topic="t", queue="q", pattern="a.*")
    manage(h, "bind", topic="t", queue="q", pattern="a.#")
    manage(h, "bind", topic="t", queue="every")
    assert manage(h, "bind", topic="t", queue="every")["created"] is False
    topic_publish(h, "a.b", [b"x"], topic="t")
    topic_publish(h, "", [b"y"], topic="t")
    h.core.committed()
    assert ready(h) == {"q": 1, "every": 2}


def test_unroutable_is_refused_or_dropped_and_an_unknown_topic_is_unroutable() -> None:
    h = Harness()
    h.hello(P)
    manage(h, "bind", topic="orders", queue="eu", pattern="orders.eu")
    seq = topic_publish(h, "orders.us", [b"x"])
    (err,) = errors_of(h.take())
    assert (err[1].name, err[1].ref) == ("UNROUTABLE", seq)
    seq = topic_publish(h, "k", [b"x"], topic="nothing")
    assert only(h.take(), f.Error).name == "UNROUTABLE"
    manage(h, "topic_set", topic="orders", unroutable="drop")
    seq = topic_publish(h, "orders.us", [b"x", b"y"])
    h.core.committed()
    assert only(h.take(), f.Confirm).entries == [(seq, 0, 2)]
    (t,) = manage(h, "topics")["topics"]
    assert (t["dropped"], t["refused"], t["published"]) == (2, 1, 0)
    assert ready(h) == {}


def test_a_failed_commit_stores_no_copy_and_a_full_queue_refuses_the_whole_publish() -> None:
    h = Harness()
    h.hello(P)
    five(h)
    seq = topic_publish(h, "orders.eu.paid", [b"a"])
    h.core.commit_failed(StorageFull("disk full"))
    assert [e.ref for _, e in errors_of(h.take())] == [seq]
    assert ready(h) == {}
    h.core.queues["eu-all"].configure(h.core.queues["eu-all"].settings.__class__(
        max_length=1))
    topic_publish(h, "orders.eu.new", [b"b"])
    h.core.committed()
    seq = topic_publish(h, "orders.eu.paid", [b"c"])
    err = only(h.take(), f.Error)
    assert (err.name, err.ref) == ("QUEUE_FULL", seq)
    h.core.committed()
    assert ready(h) == {"eu-all": 1, "eu-new": 1}  # no half fan-out


def test_a_resent_frame_of_an_idempotent_producer_stores_nothing_again() -> None:
    h = Harness()
    h.send(P, f.Hello("p", 0, producer=b"prod-1"))
    h.take()
    five(h)
    for _ in range(2):
        h.send(P, f.Publish("orders", 7, [b"a"], [], f.Options(key="orders.eu.paid")))
        h.core.committed()
    confirms = [fr.entries for _, fr in h.take() if isinstance(fr, f.Confirm)]
    assert confirms[0] == confirms[1]
    assert ready(h) == {"any-paid": 1, "eu-all": 1, "eu-paid": 1}


def test_options_apply_to_every_copy_with_each_queues_own_settings() -> None:
    h = Harness()
    h.hello(P, A)
    manage(h, "bind", topic="t", queue="a")
    manage(h, "bind", topic="t", queue="b")
    topic_publish(h, "", [b"lo"], topic="t")
    topic_publish(h, "", [b"hi"], topic="t", priority=9)
    h.core.committed()
    for q in ("a", "b"):
        h.send(A, f.Credit(q, 10))
    got = {fr.queue: fr.bodies for _, fr in delivers(h.run())}
    assert got == {"a": [b"hi", b"lo"], "b": [b"hi", b"lo"]}


@pytest.mark.parametrize(("opts", "says"), [
    ({"key": "k", "dedup_id": "d"}, "dedup_id"),
    ({"key": "k" * 256}, "key must be"),
    ({"key": 5}, "key must be"),
])
def test_bad_topic_options_are_refused(opts: dict[str, Any], says: str) -> None:
    import msgpack

    from zq.protocol import codec

    h = Harness()
    h.hello(P)
    h.send(P, [codec.command(f.PUBLISH), b"t", msgpack.packb([3, [], opts]), b"b"])
    err = only(h.take(), f.Error)
    assert err.name == "INVALID_ARGUMENT"
    assert says in err.text
    assert err.ref == 3


def test_bind_checks_its_arguments() -> None:
    h = Harness()
    h.hello(P)
    for args, name in (({"topic": "t", "queue": "q.dlq"}, "INVALID_QUEUE_NAME"),
                       ({"topic": "t", "queue": "q", "pattern": "a..b"}, "INVALID_ARGUMENT"),
                       ({"topic": "", "queue": "q"}, "INVALID_QUEUE_NAME"),
                       ({"topic": "t"}, "INVALID_QUEUE_NAME")):
        h.send(P, f.Manage(1, "bind", args))
        h.core.committed()
        assert only(h.take(), f.Error).name == name, args
    h.send(P, f.Manage(2, "unbind", {"topic": "none", "queue": "q"}))
    h.core.committed()
    assert only(h.take(), f.Error).name == "UNKNOWN_QUEUE"


async def test_bindings_and_copies_survive_a_restart(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    h = Harness()
    h.core.recover(await store.open(1000), h.now)
    h.core.durable = True
    h.hello(P)
    for queue, pattern in (("eu-paid", "orders.eu.paid"), ("us-paid", "orders.us.paid"),
                           ("eu-new", "orders.eu.new"), ("eu-all", "orders.eu.#"),
                           ("any-paid", "orders.*.paid")):
        h.send(P, f.Manage(1, "bind", {"topic": "orders", "queue": queue,
                                       "pattern": pattern}))
    topic_publish(h, "orders.eu.paid", [b"a", b"b"])
    c = h.core.take_commit()
    await store.commit(c.batch)
    h.core.committed(c.pending)
    await store.close()
    store = SqliteStore(tmp_path)
    try:
        h2 = Harness()
        h2.core.recover(await store.open(1000), h2.now)
        assert sorted(h2.core.topics) == ["orders"]
        bindings = [(b.queue, b.text) for b in h2.core.topics["orders"].bindings]
        assert ("any-paid", "orders.*.paid") in bindings
        assert len(bindings) == 5
        assert ready(h2) == {"any-paid": 2, "eu-all": 2, "eu-paid": 2}
        assert "\x00topic\x00orders" not in h2.core.queues
        h2.hello(P)
        topic_publish(h2, "orders.us.paid", [b"c"])
        h2.core.committed()
        assert ready(h2)["us-paid"] == 1
    finally:
        await store.close()


def tick(h: Harness, seconds: int) -> None:
    for _ in range(seconds):
        h.now += 1.0
        for peer in (P, A):  # alive: only the queues' consumers change
            h.send(peer, f.Heartbeat())
        h.core.tick(h.now)


def test_an_idle_queue_is_deleted_with_its_bindings_and_a_consumed_one_is_not() -> None:
    h = Harness()
    h.hello(P, A)
    for q in ("w1", "w2"):
        manage(h, "declare", queue=q, settings={"idle_ttl": 5})
        manage(h, "bind", topic="calls", queue=q)
    manage(h, "topic_set", topic="calls", unroutable="drop")
    h.send(A, f.Credit("w2", 10))
    topic_publish(h, "", [b"c1"], topic="calls")
    h.core.committed()
    tick(h, 7)
    assert "w1" not in h.core.queues  # nobody consumed it for 5 s: gone, with its copy
    assert [b.queue for b in h.core.topics["calls"].bindings] == ["w2"]
    h.send(A, f.Cancel("w2"))
    tick(h, 3)
    assert "w2" in h.core.queues  # its idle time counts from the cancel
    tick(h, 4)
    assert "w2" not in h.core.queues
    assert h.core.topics["calls"].bindings == []  # kept: it drops, a setting of its own
    h.take()
    seq = topic_publish(h, "", [b"c2"], topic="calls")
    h.core.committed()
    assert only(h.take(), f.Confirm).entries == [(seq, 0, 1)]


def test_deleting_a_queue_removes_its_bindings() -> None:
    h = Harness()
    h.hello(P)
    manage(h, "bind", topic="t", queue="q", pattern="a.*")
    manage(h, "bind", topic="t", queue="q", pattern="b.#")
    assert manage(h, "delete", queue="q")["unbound"] == 2
    assert "t" not in h.core.topics


def test_more_copies_than_one_commit_takes_are_refused_with_the_limit() -> None:
    h = Harness(commit_max=100)
    h.hello(P)
    for i in range(20):
        manage(h, "bind", topic="t", queue=f"q{i}")
    seq = topic_publish(h, "", [b"x"] * 6, topic="t")  # 120 copies
    err = only(h.take(), f.Error)
    assert (err.name, err.ref, err.info) == ("FRAME_TOO_LARGE", seq, {"limit": 5})
    topic_publish(h, "", [b"x"] * 5, topic="t")
    h.core.committed()
    assert sum(ready(h).values()) == 100
