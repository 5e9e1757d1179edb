"""A standby paused long enough for its replication connection to drop, but not for the
primary to give up on it (--ha-liveness): once it runs again it reconnects, names its
position at once, gets what the primary could not send it, and acks it; the publish
that waited is confirmed within a second or so, and the standby stays in sync.

Found while testing ``zq explain`` on a replicated broker: a standby that came back
under a new routing id, and did not say where it stood until --ha-liveness of silence,
left the waiting publish unconfirmed that long (then the primary confirmed alone).
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

import zq
from tests.etcd import Etcd
from tests.helpers import eventually
from tests.system.ha_helpers import HaPair, same_rows

LIVENESS = 10  # --ha-liveness (and --ha-ttl): the primary waits this long for its standby
RESUMED = 4.0  # seconds after SIGCONT within which the waiting publish must be confirmed

pytestmark = pytest.mark.timeout(120)



async def test_a_standby_back_from_a_pause_catches_up_at_once(tmp_path: Path,
                                                              etcd: Etcd) -> None:
    pair = HaPair(tmp_path, etcd, "--ha-liveness", str(LIVENESS), ttl=LIVENESS)
    try:
        await pair.start_both()
        primary = pair.procs[0]
        assert primary is not None
        async with zq.Client(pair.endpoints[0], name="producer", connect_timeout=30) as c:
            first = await c.publish("q", b"before")
            pair.kill(1, signal.SIGSTOP)
            waiting = asyncio.ensure_future(c.publish("q", b"during"))
            try:
                # The replication connection is dropped (ZeroMQ heartbeats: 0.2 s x 3)
                # and the primary's next ping to the standby fails.
                await eventually(lambda: "replication: cannot send to n1" in
                                 primary.log.read_text(errors="replace"),
                                 "the primary lost its connection to the paused standby",
                                 LIVENESS - 2, 0.05)
                assert not waiting.done()  # it waits for the standby's ack
            finally:
                pair.kill(1, signal.SIGCONT)
            loop = asyncio.get_running_loop()
            resumed = loop.time()
            assert await asyncio.wait_for(waiting, RESUMED) == first + 1
            took = loop.time() - resumed
            assert (await pair.sync()).get("standby") == "n1"
            log = primary.log.read_text(errors="replace")
            assert "standby n1 is" not in log, f"dropped from sync after {took:.1f} s"
            assert "confirming alone" not in log
            assert await c.publish("q", b"after") == first + 2
        await same_rows(pair)
        assert pair.bodies(1) == [b"before", b"during", b"after"]
    finally:
        await pair.stop()
