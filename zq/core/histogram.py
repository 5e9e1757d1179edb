"""Histograms cheap enough for the hot path: a fixed list of bucket bounds, one
bisect and two additions per observation, weighted (one observation may stand for a
batch of messages). No I/O; the admin listener (zq.admin) exports them in
Prometheus' format and reads quantiles from them.
"""

from __future__ import annotations

from bisect import bisect_left

# Seconds: 100 µs to a minute, about three buckets per decade.
LATENCY_BOUNDS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Messages per commit or per frame.
SIZE_BOUNDS: tuple[float, ...] = (
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000)


class Histogram:
    """Counts of observations per bucket (bucket i: value <= bounds[i]; the last
    bucket, past every bound, is +Inf), their sum and their number."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BOUNDS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float, n: int = 1) -> None:
        """``n`` observations of ``value`` (a batch whose members all waited about as long)."""
        self.counts[bisect_left(self.bounds, value)] += n
        self.sum += value * n
        self.count += n

    def snapshot(self) -> tuple[list[int], float, int]:
        """A copy of the counts, the sum and the number, to subtract later (windows)."""
        return list(self.counts), self.sum, self.count

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count of observations <= le)`` for each bound and ``+Inf``, as Prometheus
        writes a histogram's buckets."""
        out: list[tuple[str, int]] = []
        total = 0
        for bound, n in zip((*map(repr_bound, self.bounds), "+Inf"), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out


def repr_bound(bound: float) -> str:
    return repr(float(bound))


def quantile(bounds: tuple[float, ...], counts: list[int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of bucket ``counts`` over ``bounds``, interpolated
    linearly within its bucket (as Prometheus' histogram_quantile does); None with no
    observations. Past the last bound: the last bound."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            if i >= len(bounds):
                return float(bounds[-1])
            low = float(bounds[i - 1]) if i else 0.0
            return low + (float(bounds[i]) - low) * (rank - seen) / n
        seen += n
    return float(bounds[-1])


def window(now: tuple[list[int], float, int], then: tuple[list[int], float, int]
           ) -> list[int]:
    """The bucket counts observed between two snapshots."""
    return [a - b for a, b in zip(now[0], then[0], strict=True)]
