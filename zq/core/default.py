"""``BrokerCore``: the core with zq's own queue and task operations wired in.

Kept apart from the core's modules, so that none of them imports ``zq.manage``
(which builds on the core's interface, not the other way round).
"""

from __future__ import annotations

from zq.config import BrokerConfig
from zq.core.api import Operations
from zq.core.facade import Core
from zq.manage import OPERATIONS
from zq.policies.dispatch import DispatchPolicy


class BrokerCore(Core):
    """:class:`zq.core.facade.Core` with ``zq.manage``'s operations by default."""

    def __init__(self, cfg: BrokerConfig, dispatch: DispatchPolicy, broker_id: str,
                 *, durable: bool = False, operations: Operations = OPERATIONS) -> None:
        super().__init__(cfg, dispatch, broker_id, durable=durable, operations=operations)
