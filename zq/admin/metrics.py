"""``/metrics``: a broker's or a router's figures in Prometheus' text format, written
by prometheus-client from collectors that read the process's state at scrape time
(nothing is counted twice on the hot path: the core's own counters are the source).

Names follow Prometheus' conventions: a ``zq_`` prefix, base units (seconds, bytes),
``_total`` on counters. docs/MANAGEMENT.md lists them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from zq import __version__
from zq.core.histogram import Histogram

if TYPE_CHECKING:
    from zq.admin.broker_views import BrokerViews
    from zq.router.process import Router

# Per queue: (metric, help, the queue_stats key or a function of the Queue).
QUEUE_GAUGES = (
    ("zq_queue_ready_messages", "Messages ready to deliver (in memory and on disk).", "ready"),
    ("zq_queue_on_disk_messages", "Ready messages past the in-memory window.", "on_disk"),
    ("zq_queue_delayed_messages", "Messages waiting for their due time.", "delayed"),
    ("zq_queue_in_flight_messages", "Messages delivered and not settled yet.", "in_flight"),
    ("zq_queue_consumers", "Consumers subscribed to the queue.", "consumers"),
    ("zq_queue_oldest_ready_age_seconds", "Age of the oldest ready message in memory.",
     "oldest_age"),
    ("zq_queue_paused", "1 if the queue is paused (nothing is delivered).", "paused"),
)
QUEUE_COUNTERS = (
    ("zq_queue_published_total", "Messages stored in the queue.", "published"),
    ("zq_queue_delivered_total", "Deliveries (every attempt).", "delivered"),
    ("zq_queue_acked_total", "Messages acknowledged.", "acked"),
    ("zq_queue_nacked_total", "Negative acknowledgements.", "nacked"),
    ("zq_queue_redelivered_total", "Deliveries after the first attempt.", "redelivered"),
    ("zq_queue_dead_letters_total", "Messages dead-lettered out of the queue.", "dead"),
)
# The broker's counters that are not per queue: core counter -> (metric, help).
BROKER_COUNTERS = {
    "frames_in": ("zq_frames_received_total", "Frames received from peers."),
    "frames_out": ("zq_frames_sent_total", "Frames sent to peers."),
    "deliver_frames": ("zq_deliver_frames_total", "DELIVER frames sent (batches)."),
    "expired": ("zq_messages_expired_total", "Messages whose TTL ran out."),
    "time_limited": ("zq_time_limits_hit_total", "Attempts past their time limit."),
    "deduplicated": ("zq_publishes_deduplicated_total", "Publishes answered by a dedup id."),
    "resent": ("zq_publishes_resent_total", "Frames an idempotent producer resent."),
    "scheduled": ("zq_scheduled_messages_total", "Messages published by schedules."),
    "unroutable": ("zq_unroutable_sends_total", "Frames for peers that were gone."),
    "send_dropped": ("zq_dropped_sends_total", "Frames dropped at a full send queue."),
    "errors_sent": ("zq_errors_sent_total", "ERROR frames sent."),
    "peers_dropped": ("zq_peers_dropped_total", "Peers dropped (silence, errors)."),
    "undeliverable": ("zq_undeliverable_total", "Messages too large to deliver."),
    "frames_refused": ("zq_frames_refused_total", "Frames refused by access rules."),
    "peers_cut": ("zq_peers_cut_total", "Connections closed for misbehaving."),
}


class Family:
    """One metric family as plain data, taken in the event loop (cheap: tuples); the
    prometheus-client objects are built, and the text written, in a thread."""

    __slots__ = ("buckets", "doc", "kind", "labels", "name", "samples", "sum")

    def __init__(self, kind: str, name: str, doc: str, labels: tuple[str, ...] = (),
                 samples: list[tuple[Any, float]] | None = None) -> None:
        self.kind, self.name, self.doc, self.labels = kind, name, doc, labels
        self.samples: list[tuple[Any, float]] = samples if samples is not None else []
        self.buckets: list[tuple[str, int]] = []
        self.sum = 0.0

    def metric(self) -> Metric:
        if self.kind == "histogram":
            return HistogramMetricFamily(self.name, self.doc, buckets=self.buckets,
                                         sum_value=self.sum)
        fam = (GaugeMetricFamily if self.kind == "gauge" else CounterMetricFamily)(
            self.name, self.doc, labels=list(self.labels))
        one = len(self.labels) == 1
        for values, v in self.samples:
            fam.add_metric([values] if one else list(values), v)
        return fam


def histogram(name: str, doc: str, h: Histogram) -> Family:
    fam = Family("histogram", name, doc)
    fam.buckets, fam.sum = h.cumulative(), h.sum
    return fam


def scalar(kind: str, name: str, doc: str, value: float) -> Family:
    return Family(kind, name, doc, (), [((), float(value))])


def info(kind: str, ident: str) -> Family:
    return Family("gauge", "zq_info", "This process: kind, id and version.",
                  ("kind", "id", "version"), [((kind, ident, __version__), 1.0)])


class BrokerCollector:
    """Reads a broker (through its admin views) at every scrape, into plain data."""

    def __init__(self, views: BrokerViews) -> None:
        self.views = views

    async def snapshot(self) -> list[Family]:
        broker = self.views.broker
        core = broker.core
        out = [info("broker", broker.cfg.id or core.broker_id), *await self._queues(),
               scalar("gauge", "zq_sessions", "Peers with a session.", len(core.peers))]
        counters = core.counters
        out += [scalar("counter", name, doc, counters.get(key, 0))
                for key, (name, doc) in BROKER_COUNTERS.items()]
        out.append(histogram("zq_publish_confirm_latency_seconds",
                             "From a PUBLISH frame's arrival to its confirm.",
                             core.confirm_latency))
        out.append(histogram("zq_publish_deliver_latency_seconds",
                             "From publish (or due time) to first delivery; a DELIVER frame "
                             "counts each new message at its oldest one's wait.",
                             core.deliver_latency))
        return (out + self._store() + self._links() + self._uplink() + self._topics()
                + self._streams())

    async def _queues(self) -> list[Family]:
        """The per-queue families: one pass over the queues, a tuple each, letting the
        broker's loop run between every CHUNK queues (each queue's figures are of one
        moment; two queues' may be a few milliseconds apart)."""
        core = self.views.broker.core
        counts = core.in_flight()
        gauges = [Family("gauge", m, doc, ("queue",)) for m, doc, _ in QUEUE_GAUGES]
        counters = [Family("counter", m, doc, ("queue",)) for m, doc, _ in QUEUE_COUNTERS]
        queues = list(core.queues.items())
        now = time.monotonic()
        for i, (name, q) in enumerate(queues):
            if i and not i % CHUNK:
                await asyncio.sleep(0)
                now = time.monotonic()
            oldest = q.oldest()
            for fam, v in zip(gauges, (
                    q.ready_count() + q.disk, q.disk, q.delayed, counts.get(name, 0),
                    len(q.subs), round(now - oldest, 3) if oldest else 0.0, q.paused),
                    strict=True):
                fam.samples.append((name, v))
            for fam, (_, _, key) in zip(counters, QUEUE_COUNTERS, strict=True):
                fam.samples.append((name, getattr(q, key)))
        return gauges + counters

    def _store(self) -> list[Family]:
        views = self.views
        stats = views.broker.core.store_stats()
        files = views.store_files()
        commits = views.broker.commits
        return [
            scalar("gauge", "zq_store_database_bytes", "Size of the database file.",
                   files["database_bytes"]),
            scalar("gauge", "zq_store_wal_bytes", "Size of the write-ahead log.",
                   files["wal_bytes"]),
            scalar("gauge", "zq_store_full", "1 while the disk is full (publishes refused).",
                   int(bool(stats.get("full")))),
            scalar("gauge", "zq_store_reserve_bytes", "Disk space held in reserve.",
                   stats.get("reserve_bytes", 0)),
            histogram("zq_store_commit_duration_seconds", "Time to commit one batch.",
                      commits.commit_seconds),
            histogram("zq_store_commit_batch_messages", "New messages per committed batch.",
                      commits.commit_messages)]

    def _links(self) -> list[Family]:
        core = self.views.broker.core
        if not core.links:
            return []
        got = Family("counter", "zq_link_forwards_received_total",
                     "FORWARD frames received on a router's link.", ("link",))
        sent = Family("counter", "zq_link_forwards_sent_total",
                      "Frames sent in FORWARD on a router's link.", ("link",))
        inner = Family("gauge", "zq_link_inner_sessions",
                       "Sessions of clients behind a router's link.", ("link",))
        for identity, p in sorted(core.links.items()):
            label = p.name or identity.hex()
            got.samples.append((label, p.forwards_in))
            sent.samples.append((label, p.forwards_out))
            inner.samples.append((label, len(p.inner or ())))
        return [got, sent, inner]


    def _topics(self) -> list[Family]:
        """Each topic's counters (zq.core.topics), the first CHUNK by name."""
        topics = self.views.broker.core.topics
        if not topics:
            return []
        fams = [Family("counter", name, doc, ("topic",)) for name, doc, _ in _TOPIC]
        binds = Family("gauge", "zq_topic_bindings", "Queues bound to the topic.", ("topic",))
        for name in sorted(topics)[:CHUNK]:
            t = topics[name]
            for fam, (_, _, key) in zip(fams, _TOPIC, strict=True):
                fam.samples.append((name, getattr(t, key)))
            binds.samples.append((name, len(t.bindings)))
        return [*fams, binds]

    def _streams(self) -> list[Family]:
        """Each stream's size and each group's place (zq.core.streams), the first CHUNK
        streams by name."""
        streams = self.views.broker.core.streams
        if not streams:
            return []
        fams = [Family(kind, name, doc, ("stream",)) for kind, name, doc, _ in _STREAM]
        g_fams = [Family(kind, name, doc, ("stream", "group")) for kind, name, doc, _ in _GROUP]
        for name in sorted(streams)[:CHUNK]:
            st = streams[name]
            for fam, (_, _, _, key) in zip(fams, _STREAM, strict=True):
                fam.samples.append((name, float(getattr(st, key))))
            for g in st.groups.values():
                stats = g.stats()
                for fam, (_, _, _, key) in zip(g_fams, _GROUP, strict=True):
                    v = stats[key]
                    if v is not None:  # (unknown while its start is looked up)
                        fam.samples.append(((name, g.name), float(v)))
        return [*fams, *g_fams]

    def _uplink(self) -> list[Family]:
        """The uplink's state (--uplink), if the broker has one."""
        up = self.views.broker.uplink
        if up is None:
            return []
        s = up.stats(time.monotonic())
        fams = [scalar(kind, name, doc, s[key]) for kind, name, doc, key in _UPLINK]
        fams.append(Family("gauge", "zq_uplink_state", "1 for the uplink's current state.",
                           ("state",), [(state, float(s["state"] == state))
                                        for state in ("up", "down", "connecting")]))
        fams.append(Family("gauge", "zq_uplink_backlog_queue_messages",
                           "Messages of a forwarded queue waiting here (first 50 queues).",
                           ("queue",), [(q, float(n)) for q, n in s["queues"].items()]))
        return fams


# A topic's counters: (metric, help, Topic attribute).
_TOPIC = (
    ("zq_topic_published_total", "Messages published to the topic and stored.", "published"),
    ("zq_topic_copies_total", "Copies stored in bound queues.", "copies"),
    ("zq_topic_dropped_total", "Messages that matched no binding, dropped.", "dropped"),
    ("zq_topic_refused_total", "Messages that matched no binding, refused.", "refused"),
)


# A stream's figures: (kind, metric, help, Stream attribute); a group's (key of stats).
_STREAM = (
    ("gauge", "zq_stream_entries", "Entries the stream holds.", "count"),
    ("gauge", "zq_stream_bytes", "Bytes of the bodies the stream holds.", "bytes"),
    ("gauge", "zq_stream_last_offset", "Offset of the newest entry appended.", "last"),
    ("counter", "zq_stream_appended_total", "Entries appended (since the broker started).",
     "appended"),
    ("counter", "zq_stream_trimmed_total", "Entries removed by retention (since the broker "
     "started).", "trimmed"),
)
_GROUP = (
    ("gauge", "zq_stream_group_pending", "Entries of the stream the group has not done.",
     "pending"),
    ("gauge", "zq_stream_group_committed_offset", "The offset up to which the group is done.",
     "committed"),
    ("gauge", "zq_stream_group_consumers", "Consumers reading the stream in the group.",
     "consumers"),
)


# The uplink's figures: (kind, metric, help, key of Uplink.stats).
_UPLINK = (
    ("gauge", "zq_uplink_up", "1 while the uplink's session with the centre is up.", "up"),
    ("gauge", "zq_uplink_backlog_messages",
     "Messages of forwarded queues the centre has not confirmed (waiting or in flight).",
     "backlog"),
    ("gauge", "zq_uplink_in_flight_messages", "Messages sent to the centre, not confirmed.",
     "in_flight"),
    ("gauge", "zq_uplink_oldest_unforwarded_age_seconds",
     "Age of the oldest message the centre has not confirmed.", "oldest_age"),
    ("counter", "zq_uplink_forwarded_messages_total",
     "Messages the centre confirmed (deleted here).", "confirmed"),
    ("counter", "zq_uplink_refused_messages_total",
     "Messages the centre refused for good (dead-lettered here).", "refused"),
    ("counter", "zq_uplink_sessions_total", "Sessions opened with the centre.", "sessions"),
    ("counter", "zq_uplink_frames_resent_total",
     "PUBLISH frames sent again on a new session.", "frames_resent"),
    ("counter", "zq_uplink_frames_retried_total",
     "PUBLISH frames refused for a while by the centre and sent again.", "retried"),
)


_LINK_FAMILIES: tuple[tuple[str, str, str, Callable[[Any], float]], ...] = (
    ("gauge", "zq_router_link_up", "1 while the link to the broker is up.",
     lambda k: float(k.state == "up")),
    ("gauge", "zq_router_link_in_flight_publishes",
     "PUBLISH frames forwarded on the link and not answered yet.",
     lambda k: float(k.in_flight_publishes)),
    ("gauge", "zq_router_link_held_frames", "Client frames waiting for the link's WELCOME.",
     lambda k: float(len(k.held))),
    ("gauge", "zq_router_link_queues", "Queues the broker serves.",
     lambda k: float(len(k.catalog))),
    ("counter", "zq_router_link_errors_total", "ERROR or undecodable frames from the broker.",
     lambda k: float(k.errors)),
    ("counter", "zq_router_link_forwarded_in_total", "FORWARD frames read from the link.",
     lambda k: float(k.forwarded_in)),
    ("counter", "zq_router_link_forwarded_out_total", "FORWARD frames sent on the link.",
     lambda k: float(k.forwarded_out)),
)


CHUNK = 250  # queues read per turn of the event loop (about 2 ms)


class RouterCollector:
    """Reads a router's state at every scrape, into plain data."""

    def __init__(self, router: Router) -> None:
        self.router = router

    async def snapshot(self) -> list[Family]:
        state = self.router.core
        out = [info("router", state.cfg.id),
               scalar("gauge", "zq_router_clients", "Client sessions at the router.",
                      len(state.clients))]
        out += [scalar("counter", f"zq_router_{key}_total", f"Router counter {key}.", value)
                for key, value in sorted(state.counters.items())]
        links = sorted(state.links.items())
        for kind, name, doc, value in _LINK_FAMILIES:
            out.append(Family(kind, name, doc, ("broker",),
                              [(bid, value(link)) for bid, link in links]))
        out.append(Family("gauge", "zq_router_link_state", "1 for the link's current state.",
                          ("broker", "state"), [((bid, link.state), 1.0)
                                                for bid, link in links]))
        return out


class _Prepared(Collector):
    def __init__(self, families: list[Family]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return (f.metric() for f in self.families)


def render(families: list[Family]) -> bytes:
    """The exposition text of ``families`` (in a thread: it takes no lock of ours)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Prepared(families))
    return generate_latest(registry)


def exposition(collector: BrokerCollector | RouterCollector
               ) -> Callable[[], Awaitable[bytes]]:
    """The coroutine function that writes ``/metrics``: the snapshot in the event loop,
    the text in a thread, so that a broker with thousands of queues does not stop
    serving while prometheus-client formats them."""

    async def metrics() -> bytes:
        return await asyncio.to_thread(render, await collector.snapshot())

    return metrics
