"""What a consumer records from stamped bodies (index and send time, :data:`perf.hist.HEAD`).

Used by the zq and the baseline consumers of ``throughput`` runs with ``stamp``
(the ``queues`` scenario): publish→deliver latency of every message, and when
each queue's first message arrived and how long after it was sent.
"""

from __future__ import annotations

from typing import Any

from perf.common import WorkerReport, WorkerSpec
from perf.hist import HEAD, LatencyHistogram


class StampLog:
    def __init__(self, messages: int) -> None:
        self.deliver = LatencyHistogram()
        self.seen = bytearray(messages)
        self.count = 0
        self.duplicates = 0
        self.t_first = 0.0
        self.t_last = 0.0
        self.first: dict[int, tuple[float, float]] = {}  # queue -> (received, sent)
        self._unpack = HEAD.unpack_from

    def received(self, queue: int, body: bytes, now: float) -> None:
        i, sent = self._unpack(body)
        self.deliver.record(now - sent)
        if self.seen[i]:
            self.duplicates += 1
        else:
            self.seen[i] = 1
        if queue not in self.first:
            self.first[queue] = (now, sent)
            if not self.t_first:
                self.t_first = now
        self.count += 1
        self.t_last = now

    def report(self, spec: WorkerSpec, cpu_s: float, subscribe_s: float) -> WorkerReport:
        extra: dict[str, Any] = {"deliver": self.deliver.encode(), "first": self.first,
                                 "t_first": self.t_first, "subscribe_s": subscribe_s}
        return WorkerReport(spec.role, spec.index, count=self.count, duplicates=self.duplicates,
                            t_last=self.t_last, cpu_s=cpu_s, seen=bytes(self.seen), extra=extra)


def summarize(consumers: list[WorkerReport], t_start: float) -> dict[str, Any]:
    """Figures from the consumers' stamp logs (seconds; latencies as µs summaries).

    ``first_delivery_s``: from the first publish to the first delivery anywhere;
    ``all_queues_served_s``: to the moment the last queue got its first message;
    ``queue_first``: per queue, its first delivered message's publish→deliver;
    ``deliver``: publish→deliver of every message.
    """
    deliver = LatencyHistogram()
    first_lat = LatencyHistogram()
    firsts: dict[int, tuple[float, float]] = {}
    for r in consumers:
        deliver.add(LatencyHistogram.decode(r.extra["deliver"]))
        for q, (got, sent) in r.extra["first"].items():
            if q not in firsts or got < firsts[q][0]:
                firsts[q] = (got, sent)
    for got, sent in firsts.values():
        first_lat.record(got - sent)
    got_times = [got for got, _ in firsts.values()]
    return {
        "first_delivery_s": min(got_times) - t_start if got_times else 0.0,
        "all_queues_served_s": max(got_times) - t_start if got_times else 0.0,
        "queues_served": len(firsts),
        "queue_first": first_lat.summary(),
        "deliver": deliver.summary(),
        "subscribe_s": max(r.extra.get("subscribe_s", 0.0) for r in consumers),
    }
