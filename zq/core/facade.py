"""The broker core's facade: the class the shell runs, and what operations may use. No I/O.

``Core`` is every layer of ``zq.core`` together (see the package's docstring). It
takes the MANAGE operations as a table (``zq.core.api.Operations``); ``zq.core.default``
wires zq's own table in. The methods below, with the state named in
``zq.core.api.QueueOps``, are all that operations use of the core.
"""

from __future__ import annotations

from zq.core.api import QueueOps
from zq.core.model import Msg, Queue
from zq.core.sessions import Sessions


class Core(Sessions):
    """The broker's decisions for one broker process."""

    def queue(self, name: str) -> Queue:
        """The queue ``name``, created (with default settings) if it does not exist."""
        return self._queue(name)

    def touch(self, q: Queue) -> None:
        """``q`` changed: look at it at the next dispatch."""
        self._dirty.add(q)

    def untouch(self, q: Queue) -> None:
        """``q`` is gone: do not dispatch from it."""
        self._dirty.discard(q)

    def forget_backlog(self, q: Queue) -> None:
        """``q`` has nothing left on disk (purged, deleted)."""
        q.disk = 0
        self._spilled.discard(q)
        self.draining.discard(q)

    def drain_backlog(self, q: Queue) -> None:
        """Page ``q``'s backlog in even without consumers (for a redrive to move it)."""
        self.draining.add(q)

    def budget(self, m: Msg) -> int:
        """Header bytes ``m`` may carry and still be delivered alone from any queue."""
        return self._budget(m)


def _conforms(core: Core) -> QueueOps:
    return core  # mypy checks here that Core offers what operations may use
