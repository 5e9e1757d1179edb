"""Recent quantiles of cumulative histograms: the p99 of the last seconds, not of the
whole life of the process (what a dashboard's chart and an operator want). No I/O.
"""

from __future__ import annotations

from collections import deque

from zq.core.histogram import Histogram, quantile, window

WINDOW_S = 10.0  # seconds a recent quantile covers
_KEEP = 64  # snapshots kept per histogram (one per reading at most every WINDOW_S / 8)


class Recent:
    """Snapshots of one histogram over time; ``quantiles(now)`` reads the last window."""

    def __init__(self, hist: Histogram) -> None:
        self.hist = hist
        self._snaps: deque[tuple[float, tuple[list[int], float, int]]] = deque(maxlen=_KEEP)

    def quantiles(self, now: float, qs: tuple[float, ...] = (0.5, 0.99)
                  ) -> dict[str, float | int | None]:
        """``{"p50": s, "p99": s, "count": n}`` of the observations in about the last
        WINDOW_S seconds (since the oldest snapshot within it; all of them at first)."""
        snap = self.hist.snapshot()
        snaps = self._snaps
        base: tuple[list[int], float, int] | None = None
        for t, s in snaps:  # the oldest within the window, else the newest before it
            base = s
            if now - t <= WINDOW_S:
                break
        if not snaps or now - snaps[-1][0] >= WINDOW_S / 8:
            snaps.append((now, snap))
        counts = window(snap, base) if base is not None else list(snap[0])
        out: dict[str, float | int | None] = {"count": sum(counts)}
        for q in qs:
            v = quantile(self.hist.bounds, counts, q)
            out[f"p{round(q * 100):d}"] = None if v is None else round(v, 6)
        return out
