"""A user's app, tested with zq.testing only (acceptance 6): no broker process."""

from __future__ import annotations

from collections import Counter
from typing import Any

import zq

app = zq.App(name="shop")

attempts: Counter[str] = Counter()  # calls per order, in this process


class GatewayTimeout(Exception):
    pass


@app.task(queue="payments", max_attempts=5, retry=zq.Retry("fixed", base=0.05))
async def charge(order: str, cents: int) -> dict[str, Any]:
    """The payment gateway times out twice per order, then takes the charge."""
    attempts[order] += 1
    if attempts[order] <= 2:
        raise GatewayTimeout(f"gateway timed out charging {order}")
    return {"order": order, "cents": cents, "attempts": attempts[order]}


@app.task(queue="payments", max_attempts=3, retry=zq.Retry("exponential", base=0.02))
def refund(order: str) -> None:
    """Refunds are broken: every attempt raises."""
    attempts[f"refund:{order}"] += 1
    raise RuntimeError(f"refunds are disabled ({order})")
