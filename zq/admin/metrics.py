"""``/metrics``: a broker's or a router's figures in Prometheus' text format, written
by prometheus-client from collectors that read the process's state at scrape time
(nothing is counted twice on the hot path: the core's own counters are the source).

Names follow Prometheus' conventions: a ``zq_`` prefix, base units (seconds, bytes),
``_total`` on counters. docs/MANAGEMENT.md lists them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
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


def histogram(name: str, doc: str, h: Histogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, buckets=h.cumulative(), sum_value=h.sum)


class BrokerCollector(Collector):
    """Reads a broker (through its admin views) at every scrape."""

    def __init__(self, views: BrokerViews) -> None:
        self.views = views

    def collect(self) -> Iterator[Metric]:
        broker = self.views.broker
        core = broker.core
        info = GaugeMetricFamily("zq_info", "This process: kind, id and version.",
                                 labels=["kind", "id", "version"])
        info.add_metric(["broker", broker.cfg.id or core.broker_id, __version__], 1)
        yield info
        yield from self._queues()
        sessions = GaugeMetricFamily("zq_sessions", "Peers with a session.")
        sessions.add_metric([], len(core.peers))
        yield sessions
        for key, (name, doc) in BROKER_COUNTERS.items():
            c = CounterMetricFamily(name, doc)
            c.add_metric([], core.counters.get(key, 0))
            yield c
        yield histogram("zq_publish_confirm_latency_seconds",
                        "From a PUBLISH frame's arrival to its confirm.", core.confirm_latency)
        yield histogram("zq_publish_deliver_latency_seconds",
                        "From publish (or due time) to first delivery; a DELIVER frame "
                        "counts each new message at its oldest one's wait.",
                        core.deliver_latency)
        yield from self._store()
        yield from self._links()

    def _queues(self) -> Iterator[Metric]:
        core = self.views.broker.core
        counts = core.in_flight()
        now = time.monotonic()
        rows = [(name, q, core.queue_stats(q, counts.get(name, 0), now))
                for name, q in sorted(core.queues.items())]
        for metric, doc, key in QUEUE_GAUGES:
            g = GaugeMetricFamily(metric, doc, labels=["queue"])
            for name, _, stats in rows:
                g.add_metric([name], float(stats[key]))
            yield g
        for metric, doc, key in QUEUE_COUNTERS:
            c = CounterMetricFamily(metric, doc, labels=["queue"])
            for name, q, _ in rows:
                c.add_metric([name], getattr(q, key))
            yield c

    def _store(self) -> Iterator[Metric]:
        views = self.views
        stats = views.broker.core.store_stats()
        files = views.store_files()
        for name, doc, value in (
                ("zq_store_database_bytes", "Size of the database file.",
                 files["database_bytes"]),
                ("zq_store_wal_bytes", "Size of the write-ahead log.", files["wal_bytes"]),
                ("zq_store_full", "1 while the disk is full (publishes refused).",
                 int(bool(stats.get("full")))),
                ("zq_store_reserve_bytes", "Disk space held in reserve.",
                 stats.get("reserve_bytes", 0))):
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], float(value))
            yield g
        commits = views.broker.commits
        yield histogram("zq_store_commit_duration_seconds", "Time to commit one batch.",
                        commits.commit_seconds)
        yield histogram("zq_store_commit_batch_messages", "New messages per committed batch.",
                        commits.commit_messages)

    def _links(self) -> Iterator[Metric]:
        core = self.views.broker.core
        if not core.links:
            return
        got = CounterMetricFamily("zq_link_forwards_received_total",
                                  "FORWARD frames received on a router's link.",
                                  labels=["link"])
        sent = CounterMetricFamily("zq_link_forwards_sent_total",
                                   "Frames sent in FORWARD on a router's link.", labels=["link"])
        inner = GaugeMetricFamily("zq_link_inner_sessions",
                                  "Sessions of clients behind a router's link.", labels=["link"])
        for identity, p in sorted(core.links.items()):
            label = p.name or identity.hex()
            got.add_metric([label], p.forwards_in)
            sent.add_metric([label], p.forwards_out)
            inner.add_metric([label], len(p.inner or ()))
        yield from (got, sent, inner)


class RouterCollector(Collector):
    """Reads a router's state at every scrape."""

    def __init__(self, router: Router) -> None:
        self.router = router

    def collect(self) -> Iterator[Metric]:
        state = self.router.core
        info = GaugeMetricFamily("zq_info", "This process: kind, id and version.",
                                 labels=["kind", "id", "version"])
        info.add_metric(["router", state.cfg.id, __version__], 1)
        yield info
        clients = GaugeMetricFamily("zq_router_clients", "Client sessions at the router.")
        clients.add_metric([], len(state.clients))
        yield clients
        for key, value in sorted(state.counters.items()):
            c = CounterMetricFamily(f"zq_router_{key}_total", f"Router counter {key}.")
            c.add_metric([], value)
            yield c
        yield from self._links()

    def _links(self) -> Iterator[Metric]:
        links = self.router.core.links
        fams: list[tuple[Any, Callable[[Any], float]]] = [
            (GaugeMetricFamily("zq_router_link_up", "1 while the link to the broker is up.",
                               labels=["broker"]), lambda k: float(k.state == "up")),
            (GaugeMetricFamily("zq_router_link_in_flight_publishes",
                               "PUBLISH frames forwarded on the link and not answered yet.",
                               labels=["broker"]), lambda k: float(k.in_flight_publishes)),
            (GaugeMetricFamily("zq_router_link_held_frames",
                               "Client frames waiting for the link's WELCOME.",
                               labels=["broker"]), lambda k: float(len(k.held))),
            (GaugeMetricFamily("zq_router_link_queues", "Queues the broker serves.",
                               labels=["broker"]), lambda k: float(len(k.catalog))),
            (CounterMetricFamily("zq_router_link_errors_total",
                                 "ERROR or undecodable frames from the broker.",
                                 labels=["broker"]), lambda k: float(k.errors)),
            (CounterMetricFamily("zq_router_link_forwarded_in_total",
                                 "FORWARD frames read from the link.", labels=["broker"]),
             lambda k: float(k.forwarded_in)),
            (CounterMetricFamily("zq_router_link_forwarded_out_total",
                                 "FORWARD frames sent on the link.", labels=["broker"]),
             lambda k: float(k.forwarded_out)),
        ]
        for fam, value in fams:
            for bid, link in sorted(links.items()):
                fam.add_metric([bid], value(link))
            yield fam
        state = GaugeMetricFamily("zq_router_link_state", "1 for the link's current state.",
                                  labels=["broker", "state"])
        for bid, link in sorted(links.items()):
            state.add_metric([bid, link.state], 1)
        yield state


def exposition(collector: Collector) -> Callable[[], bytes]:
    """The function that writes ``/metrics`` from ``collector``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return lambda: generate_latest(registry)
