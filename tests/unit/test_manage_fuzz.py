"""MANAGE operations with arguments of every wrong shape: each gets a ZqError (an ERROR
frame for the client), never another exception that would stop the broker's loop."""

from __future__ import annotations

import contextlib
import random
from typing import Any

from tests.unit.test_core import A, Harness
from zq.errors import ZqError
from zq.manage import manage
from zq.manage import queues as admin
from zq.manage import tasks as tasks_admin
from zq.protocol import frames as f

OPS = [*admin.OPERATIONS, *tasks_admin.PEER_OPERATIONS, "wait"]
KEYS = ["queue", "settings", "id", "attempt", "ok", "result", "error", "retry", "delay_ms",
        "timeout_ms", "name", "body", "headers", "every_ms", "cron", "misfire", "options",
        "to", "match", "since", "until", "limit", "max_length", "weights", "caps", "ttl",
        "priority", "type", "message", "traceback", "dlq", "overflow", "selection"]


def value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(12 if depth < 2 else 9)
    if kind == 9:
        return [value(rng, depth + 1) for _ in range(rng.randrange(3))]
    if kind == 10:
        return {rng.choice(KEYS): value(rng, depth + 1) for _ in range(rng.randrange(4))}
    if kind == 11:
        return {rng.randrange(3): "int key"}
    return [None, True, rng.randint(-5, 5), 2**64 + 1, -(2**63), rng.random() * 1e300,
            float("nan"), "q", b"\x00\xff"][kind]


VALID: dict[str, dict[str, Any]] = {
    "declare": {"queue": "q", "settings": {"max_length": 10, "weights": {"a": 2}}},
    "info": {"queue": "q"}, "list": {}, "pause": {"queue": "q"}, "resume": {"queue": "q"},
    "purge": {"queue": "q"}, "delete": {"queue": "q"}, "peek": {"queue": "q", "limit": 5},
    "redrive": {"queue": "q.dlq", "to": "q", "match": "x", "since": 0, "until": 2e9,
                "limit": 3},
    "sync": {}, "complete": {"queue": "q", "id": 1, "attempt": 1, "ok": False,
                             "error": {"type": "E", "message": "m", "traceback": "t"},
                             "retry": True, "delay_ms": 5},
    "status": {"queue": "q", "id": 1}, "wait": {"queue": "q", "id": 1, "timeout_ms": 10},
    "schedule_add": {"name": "s", "queue": "q", "body": b"b", "every_ms": 1000,
                     "headers": {"h": 1}, "misfire": "skip", "options": {"priority": 3}},
    "schedule_ls": {}, "schedule_rm": {"name": "s"},
}


def test_valid_templates_are_accepted() -> None:
    h = Harness(heartbeat=600.0)
    h.hello(A)
    admin.declare(h.core, {"queue": "q"}, h.now)
    admin.declare(h.core, {"queue": "q.dlq"}, h.now)
    for op, args in VALID.items():
        if op in ("complete", "delete"):
            continue  # need a delivery / would remove the queue for the others
        manage(h.core, f.Manage(0, op, dict(args)), h.now, h.core.peers[A])


def test_mutated_templates_never_escape_as_other_exceptions() -> None:
    rng = random.Random(7)
    h = Harness(heartbeat=600.0)
    h.hello(A)
    core = h.core
    peer = core.peers[A]
    refused = 0
    for i in range(5000):
        op = rng.choice(list(VALID))
        args = dict(VALID[op])
        admin.declare(core, {"queue": "q"}, h.now)
        h.send(A, f.Publish("q", i + 1, [b"m"]))
        core.committed()
        h.send(A, f.Credit("q", 1))
        core.dispatch(h.now)
        keys = sorted(set(args) | {"queue"})
        for key in rng.sample(keys, min(len(keys), rng.randrange(1, 3))):
            args[key] = value(rng)
        try:
            manage(core, f.Manage(i, op, args), h.now, peer)
        except ZqError:
            refused += 1
        h.now += 0.01
        core.tick(h.now)
        core.dispatch(h.now)
        h.take()
    assert 0 < refused < 5000


def test_random_manage_arguments_never_escape_as_other_exceptions() -> None:
    rng = random.Random(20261127)
    h = Harness(heartbeat=600.0)
    h.hello(A)
    core = h.core
    admin.declare(core, {"queue": "q"}, h.now)
    peer = core.peers[A]
    for i in range(5000):
        op = rng.choice(OPS)
        args: dict[str, Any] = {k: value(rng) for k in rng.sample(KEYS, rng.randrange(6))}
        if rng.random() < 0.5:
            args["queue"] = "q"
        with contextlib.suppress(ZqError):
            manage(core, f.Manage(i, op, args), h.now, peer)
        core.tick(h.now)
        core.dispatch(h.now)
        core.committed()
        h.take()
    assert core.peers[A] is peer


def test_a_bug_in_a_handler_is_an_internal_error_for_that_client_only(
        monkeypatch: Any) -> None:
    h = Harness(heartbeat=600.0)
    h.hello(A)

    def broken(*_: Any) -> dict[str, Any]:
        raise KeyError("a bug")

    monkeypatch.setitem(admin.OPERATIONS, "sync", broken)
    h.send(A, f.Manage(5, "sync", {}))
    [(who, err)] = [(i, fr) for i, fr in h.take() if isinstance(fr, f.Error)]
    assert (who, err.name, err.op, err.ref) == (A, "INTERNAL", f.MANAGE, 5)
    assert A in h.core.peers
