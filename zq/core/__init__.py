"""The broker's decisions, with no I/O: sessions, queues, credit, acks, leases, heartbeats.

The asyncio shell in ``zq/broker.py`` feeds it received multipart messages with
the current monotonic time, commits the batch it builds, and sends what it
appends to its outbox. One loop pass is::

    receive(...) * n  ->  tick(now)  ->  take_commit()  ->  store.commit()
    ->  committed()  ->  dispatch(now)  ->  send out

The core is built in layers, each a module that builds on the one before and never
reaches up to a later one:

    model      messages, lanes, queues, subscriptions, peers
    state      what every rule reads and changes; small shared helpers
    failures   failed attempts, history, retries, dead letters, delays
    intake     PUBLISH admission and queueing once stored
    topics     topics, bindings, and a PUBLISH copied into every matching queue
    streams    retained logs: appends, consumer groups reading them, retention
    commits    the commit cycle: what waits for the store, what a failure refuses
    settle     CREDIT, CANCEL, ACK, NACK, RELEASE, START, EXTEND, fencing
    delivery   dispatch, batches, probes
    leases     sessions that end and what their deliveries cost
    timers     heartbeats, delays, time limits, expiry, schedules
    backlog    recovery and paging from disk
    stats      counters
    sessions   frames in: decoding, the session table, one handler per frame
    moves      queues moved to and from other brokers of a cluster
    uplink     queues an edge broker forwards to a central cluster (zq.uplink)
    facade     BrokerCore, and the narrow interface queue operations use

Queue and task operations (MANAGE) live in ``zq.manage`` and are handed to the
core as a table; the core never imports them. ``zq.core.BrokerCore`` (loaded on
first use) is the facade with zq's standard table wired in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zq.core.leases import charged
from zq.core.model import Peer
from zq.core.state import (
    _FATAL,
    DEAD_AT,
    HISTORY,
    MAX_HEARTBEAT,
    ORIGIN,
    REASON,
    STATS_SHOWN,
    Commit,
    pack_opts,
    unpack_opts,
)

if TYPE_CHECKING:
    from zq.core.default import BrokerCore

__all__ = ["DEAD_AT", "HISTORY", "MAX_HEARTBEAT", "ORIGIN", "REASON",
           "STATS_SHOWN", "_FATAL", "BrokerCore", "Commit", "Peer", "charged", "pack_opts",
           "unpack_opts"]


def __getattr__(name: str) -> Any:
    if name == "BrokerCore":
        from zq.core.default import BrokerCore

        return BrokerCore
    raise AttributeError(f"module 'zq.core' has no attribute {name!r}")
