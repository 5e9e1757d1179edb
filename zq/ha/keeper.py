"""Keeping a leader lease alive, and saying at once when it is lost.

:class:`LeaseKeeper` renews a :class:`~zq.ha.lease.LeaderLease` every ``ttl / 3``
seconds. A renewal that cannot reach etcd is retried until the lease's own deadline
(``ttl - margin`` after the start of the last good renewal); each attempt is bounded
so that the deadline is checked on time. The keeper calls ``on_lost`` once, with the
reason, when the claim ends: a renewal found it gone, or the deadline passed without
a good renewal. By then :meth:`LeaderLease.holds` is already false, so whatever asks
it before confirming or delivering stops even before ``on_lost`` runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aetcd.exceptions import ClientError

from zq.ha.lease import LeaderLease

log = logging.getLogger("zq.ha")

RETRY = 0.1  # seconds between attempts after one that failed


class LeaseKeeper:
    def __init__(self, lease: LeaderLease, on_lost: Callable[[str], None]) -> None:
        self.lease = lease
        self.on_lost = on_lost
        self.interval = lease.ttl / 3
        self.renewals = 0
        self.failures = 0  # attempts that could not reach etcd in time

    async def run(self) -> str:
        """Renew until the claim is lost (returns the reason) or the task is cancelled."""
        lease = self.lease
        while True:
            now = time.monotonic()
            if not lease.holds(now):
                return self._lost("no renewal succeeded before the lease's deadline")
            budget = min(self.interval, lease.valid_until - now)
            try:
                ok = await asyncio.wait_for(lease.renew(), budget)
            except (TimeoutError, ClientError) as exc:
                self.failures += 1
                log.warning("renewing the leader lease failed (%s); retrying until %.1f s "
                            "from now", type(exc).__name__, lease.valid_until - now)
                await asyncio.sleep(min(RETRY, max(0.0, lease.valid_until - time.monotonic())))
                continue
            if not ok:
                return self._lost("the lease ended in etcd, or the key is another's")
            self.renewals += 1
            await asyncio.sleep(max(0.0, min(self.interval,
                                             lease.valid_until - time.monotonic())))

    def _lost(self, why: str) -> str:
        log.error("leader lease lost: %s", why)
        self.on_lost(why)
        return why
