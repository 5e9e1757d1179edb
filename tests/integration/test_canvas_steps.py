"""Workflow steps against an in-process broker (zq.testing): a chain's next step is
stored once however often the step before it runs (its dedup id), a chord waits for its
members and publishes its callback once, a dead member makes the chord dead."""

from __future__ import annotations

from typing import Any

import zq
import zq.testing
from zq.node import steps
from zq.node.calls import TASK_HEADER, decode_body, encode_body
from zq.node.canvas import NEXT, THEN, WORKFLOW

app = zq.App(name="steps-app")


@app.task(name="inc", queue="s")
async def inc(x: int) -> int:
    return x + 1


class FakeMessage:
    """What steps read of a delivered message."""

    def __init__(self, queue: str, mid: int, headers: dict[str, Any], body: bytes) -> None:
        self.queue, self.id, self.headers, self.body = queue, mid, headers, body


async def test_a_step_run_twice_publishes_its_next_step_once() -> None:
    async with zq.testing.Broker(app):
        client = await app.client()
        msg = FakeMessage("s", 7, {TASK_HEADER: "inc", WORKFLOW: ["w1", 0],
                                   THEN: [["inc", "s", [], {}], ["inc", "s", [], {}]]},
                          encode_body([1], {}))
        first = await steps.advance(client, msg, 2)  # type: ignore[arg-type]
        again = await steps.advance(client, msg, 2)  # type: ignore[arg-type]
        assert first == again
        assert first["result"] == 2
        queue, mid = first[NEXT]
        st = await client.task_status(queue, mid)
        assert st["state"] == "ready"
        info = await client.queue_info("s")
        assert info["stats"]["ready"] == 1  # once
        peeked = (await client.peek("s"))[0]
        assert peeked["headers"][WORKFLOW] == ["w1", 1]
        assert peeked["headers"][THEN] == [["inc", "s", [], {}]]
        assert decode_body(peeked["body"]) == ([2], {})


async def test_a_chord_waits_then_publishes_its_callback_once_and_a_dead_member_ends_it(
        ) -> None:
    async with zq.testing.Broker(app):
        client = await app.client()
        await client.declare_queue("s", result_ttl=60)
        a = await client.publish("s", encode_body([1], {}), headers={TASK_HEADER: "inc"})
        chord_args = {"members": [["s", a]], "callback": ["inc", "s.cb", [], {}]}
        msg = FakeMessage("s.cb", 99, {}, b"")
        assert (await steps.chord(client, msg, chord_args))[0] == steps.WAIT  # type: ignore[arg-type]
        async with client.consume("s", prefetch=1) as consumer:
            m = await consumer.__anext__()
            await m.complete(True, result=5)
        state, value = await steps.chord(client, msg, chord_args)  # type: ignore[arg-type]
        again = await steps.chord(client, msg, chord_args)  # type: ignore[arg-type]
        assert state == "done"
        assert again == (state, value)  # the callback once (dedup id)
        assert (await client.queue_info("s.cb"))["stats"]["ready"] == 1
        b = await client.publish("s", encode_body([1], {}), headers={TASK_HEADER: "inc"})
        async with client.consume("s", prefetch=1) as consumer:
            m = await consumer.__anext__()
            await m.complete(False, error={"type": "E", "message": "no", "traceback": ""},
                             retry=False)
        state, report = await steps.chord(client, msg,  # type: ignore[arg-type]
                                          {"members": [["s", b]], "callback": ["inc", "x",
                                                                              [], {}]})
        assert state == "dead"
        assert "is dead" in report["message"]
