"""``python -m perf latency --plot FILE``: a latency-by-percentile plot (PNG).

Only when matplotlib can be imported; it is not a dependency of zq or of its test
extra, so without it the plot is skipped with a message. The x axis is the
percentile on HdrHistogram's usual scale, 1 / (1 - p): each step to the right
is one more nine (90 %, 99 %, 99.9 %, ...), where tail latency lives.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

MISSING = "matplotlib is not installed: no plot written (pip install matplotlib to get one)"
_STYLE = {"deliver": "-", "confirm": "--"}
_LABEL = {"deliver": "publish→deliver", "confirm": "publish→confirm"}


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def points(curve: list[tuple[float, int]]) -> tuple[list[float], list[float]]:
    """x = 1 / (1 - p/100) and y in ms, without the 100th percentile (x would be infinite)."""
    xs: list[float] = []
    ys: list[float] = []
    for pct, us in curve:
        if pct >= 100.0:
            continue
        xs.append(1.0 / (1.0 - pct / 100.0))
        ys.append(us / 1000.0)
    return xs, ys


def latency_plot(results: dict[str, Any], title: str, path: Path) -> str:
    """Write the plot of every system's confirm and deliver curves to ``path`` (PNG).

    ``results`` maps a system name to a :class:`perf.latency.LatencyResult`.
    Returns a line to print: where the plot went, or why there is none.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        return MISSING
    fig, ax = plt.subplots(figsize=(9, 5.5))
    xmax = 10.0
    try:
        for system, r in results.items():
            for metric in ("deliver", "confirm"):
                xs, ys = points(r.curves.get(metric, []))
                if not xs:
                    continue
                xmax = max(xmax, xs[-1])
                ax.plot(xs, ys, _STYLE[metric], label=f"{system} {_LABEL[metric]}")
        nines = max(1, math.ceil(math.log10(xmax)))
        ticks = [10.0 ** k for k in range(nines + 1)]
        ax.set_xscale("log")
        ax.set_xticks(ticks)
        ax.set_xticklabels([_pct_label(t) for t in ticks])
        ax.set_xlim(1.0, ticks[-1])
        ax.set_xlabel("percentile")
        ax.set_ylabel("latency (ms)")
        ax.set_title(textwrap.fill(title, 100), fontsize=9)
        ax.grid(True, which="major", alpha=0.4)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png", dpi=110)
    finally:
        plt.close(fig)
    return f"plot written to {path}"


def _pct_label(x: float) -> str:
    """The percentile at x = 1 / (1 - p): 1 -> 0%, 10 -> 90%, 100 -> 99%, ..."""
    if x <= 1.0:
        return "0%"
    p = 100.0 * (1.0 - 1.0 / x)
    return f"{p:.{max(0, round(math.log10(x)) - 2)}f}%"
