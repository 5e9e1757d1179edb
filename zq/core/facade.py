"""The broker core's facade: the class the shell runs, and what operations may use. No I/O.

``Core`` is every layer of ``zq.core`` together (see the package's docstring). It
takes the MANAGE operations as a table (``zq.core.api.Operations``); ``zq.core.default``
wires zq's own table in. The methods below, with the state named in
``zq.core.api.QueueOps``, are all that operations use of the core.
"""

from __future__ import annotations

from zq.core.api import QueueOps
from zq.core.model import Msg, Queue
from zq.core.uplink import Uplinks
from zq.protocol import codec
from zq.protocol import frames as f


class Core(Uplinks):
    """The broker's decisions for one broker process."""

    def queue(self, name: str) -> Queue:
        """The queue ``name``, created (with default settings) if it does not exist."""
        return self._queue(name)

    def touch(self, q: Queue) -> None:
        """``q`` changed: look at it at the next dispatch."""
        self._dirty.add(q)

    def untouch(self, q: Queue) -> None:
        """``q`` is gone: do not dispatch from it (and routers hear it is gone)."""
        self._dirty.discard(q)
        if self.links:
            self.catalog_changes.append(("remove", q.name))

    def dispatch(self, now: float | None = None) -> None:
        """Deliver what credit allows; first tell routers of queues made or removed."""
        if self.catalog_changes:
            self.announce()
        super().dispatch(now)

    def announce(self) -> None:
        """CATALOG add/remove frames for the queue changes since the last pass (a queue
        moved away: a remove that says where it went)."""
        changes, self.catalog_changes = self.catalog_changes, []
        frames: list[tuple[str, list[str], dict[str, str] | None]] = []
        for kind, name in changes:
            moved = None
            if kind == "moved":
                kind, moved = "remove", {name: self._moved_to(name)}
            if frames and frames[-1][0] == kind and (frames[-1][2] is None) == (moved is None):
                frames[-1][1].append(name)
                if moved is not None and frames[-1][2] is not None:
                    frames[-1][2].update(moved)
            else:
                frames.append((kind, [name], moved))
        for link in self.links.values():
            for kind, names, to in frames:
                link.catalog_seq += 1
                self._send(link.identity, codec.encode(f.Catalog(link.catalog_seq, kind,
                                                                 names, to)))

    def _moved_to(self, name: str) -> str:
        q = self.queues.get(name)
        mv = q.moving if q is not None else self.moved_out.get(name)
        return mv.to if mv is not None else ""

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
