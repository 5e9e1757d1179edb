"""One rule for queue names, and the same error from the SDK, the CLI and the broker.

Issue 10, item 5: names with spaces, tabs or ``../`` were accepted (and broke
``zq queue ls``), and producers could publish straight into ``*.dlq``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

import zq
from tests.procs import Proc
from tests.system.rawpeer import Raw
from tests.system.test_cli import cli
from zq.protocol import codec
from zq.protocol import frames as f

BAD = ["has space", "tab\there", "../../etc", "new\nline", "a..b"]


@pytest.mark.parametrize("name", BAD)
async def test_a_bad_name_is_refused_alike_by_sdk_cli_and_broker(
        broker: Proc, raw: Callable[[str], Raw], name: str) -> None:
    ep = broker.endpoint
    async with zq.Client(ep) as c:
        with pytest.raises(zq.InvalidQueueName) as sdk:
            await c.publish(name, b"x")
        with pytest.raises(zq.InvalidQueueName):
            await c.declare_queue(name)
        rc, _, err = await cli("publish", name, "x", endpoint=ep)
        assert rc == 1
        assert "INVALID_QUEUE_NAME" in err
        peer = raw(ep)
        await peer.hello()
        await peer.send(codec.encode(f.Publish(name, 5, [b"x"])))
        e = await peer.error()
        assert (e.name, e.op, e.ref) == ("INVALID_QUEUE_NAME", f.PUBLISH, 5)
        assert e.text.split(":")[0] == sdk.value.message.split(":")[0]  # the same words
        await peer.send(codec.encode(f.Stats(1)))  # not fatal: the session goes on
        assert isinstance(await peer.recv(), f.StatsReply)
        assert name not in await c.queues()


async def test_dead_letter_queues_take_no_publishes_but_can_be_read(broker: Proc) -> None:
    ep = broker.endpoint
    async with zq.Client(ep) as c:
        await c.declare_queue("mail", max_attempts=1)
        with pytest.raises(zq.InvalidQueueName, match="dead-letter queue"):
            await c.publish("mail.dlq", b"forged")
        rc, _, err = await cli("publish", "mail.dlq", "forged", endpoint=ep)
        assert rc == 1
        assert "dead-letter queue" in err
        await c.publish("mail", b"real")
        async with c.consume("mail", prefetch=1) as con:
            m = await con.get(timeout=5)
            await m.nack(reason="bounced", wait=True)
        async with c.consume("mail.dlq", prefetch=1) as con:  # consuming one is fine
            m = await con.get(timeout=5)
            assert m.body == b"real"
            await m.ack(wait=True)


async def test_names_of_letters_digits_and_punctuation_in_any_script(broker: Proc) -> None:
    async with zq.Client(broker.endpoint) as c:
        for name in ("orders", "eu-west/orders:v2", "Bestellungen_ä", "заказы.2024"):
            await c.publish(name, b"x")
        rc, out, _ = await cli("queue", "ls", endpoint=broker.endpoint)
        assert rc == 0
        assert all(len(line.split()) == 7 for line in out.splitlines()[1:]), out


async def test_empty_and_overlong_names_get_the_same_error_and_keep_the_session(
        broker: Proc, raw: Callable[[str], Raw]) -> None:
    peer = raw(broker.endpoint)
    await peer.hello()
    for name in (b"", b"x" * 256):
        await peer.send([codec.command(f.PUBLISH), name, codec.packb([9, []]), b"x"])
        e = await peer.error()
        assert (e.name, e.op, e.ref) == ("INVALID_QUEUE_NAME", f.PUBLISH, 9)
    await peer.send(codec.encode(f.Stats(1)))  # not fatal
    assert isinstance(await peer.recv(), f.StatsReply)
    async with zq.Client(broker.endpoint) as c:
        for name in ("", "x" * 256):
            with pytest.raises(zq.InvalidQueueName):
                await c.publish(name, b"x")
            with pytest.raises(zq.InvalidQueueName):
                c.consume(name)


async def test_consume_names_a_bad_queue_name_before_anything_else(broker: Proc) -> None:
    for args in (["consume", "a b", "--timeout", "1"],
                 ["consume", "a..b", "--no-create", "--timeout", "1"]):
        rc, _, err = await cli(*args, endpoint=broker.endpoint)
        assert rc == 1
        assert "INVALID_QUEUE_NAME" in err
        assert "does not exist" not in err


async def test_redrive_moves_back_to_work_never_into_a_dead_letter_queue(broker: Proc) -> None:
    async with zq.Client(broker.endpoint) as c:
        await c.declare_queue("jobs", max_attempts=1)
        await c.publish("jobs", b"x")
        async with c.consume("jobs", prefetch=1) as con:
            m = await con.get(timeout=5)
            await m.nack(reason="no", wait=True)
        with pytest.raises(zq.InvalidQueueName, match="dead-letter queue"):
            await c.redrive("jobs.dlq", to="other.dlq")
        rc, _, err = await cli("dlq", "redrive", "jobs.dlq", "--to", "other.dlq",
                               endpoint=broker.endpoint)
        assert rc == 1
        assert "dead-letter queue" in err
        assert await c.redrive("jobs.dlq", to="jobs-retry") == 1
