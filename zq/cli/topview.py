"""What ``zq top`` shows, with no I/O: rows from two successive STATS maps, sorted, and
the rich renderable of one frame.

Names in STATS (queues, peers, the broker id) are chosen by other programs. Each goes
into the frame as a :class:`rich.text.Text` with its control characters escaped, never
as markup, so a queue named ``[blink]x`` or a peer named ``\\x1b[2J`` shows as those
characters and does nothing to the terminal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

NAME_LIMIT = 120  # characters of a name shown; the table cuts it further to fit


@dataclass(frozen=True, slots=True)
class Column:
    key: str  # the QueueRow field, and the word --sort takes
    title: str
    numeric: bool = True


QUEUE_COLUMNS = (
    Column("name", "queue", numeric=False), Column("ready", "ready"),
    Column("delayed", "delayed"), Column("in_flight", "in flight"),
    Column("consumers", "consumers"), Column("dead", "dead"), Column("publish", "publish/s"),
    Column("deliver", "deliver/s"), Column("ack", "ack/s"), Column("oldest", "oldest"),
    Column("paused", "paused"))
SORT_KEYS = tuple(c.key for c in QUEUE_COLUMNS)
# The broker's counter behind each rate, for rates measured between two refreshes.
RATE_COUNTERS = {"publish": "published", "deliver": "delivered", "ack": "acked"}


@dataclass(frozen=True, slots=True)
class QueueRow:
    name: str
    ready: int
    delayed: int
    in_flight: int
    consumers: int
    dead: int
    publish: float
    deliver: float
    ack: float
    oldest: float
    paused: bool


@dataclass(frozen=True, slots=True)
class ConsumerRow:
    peer: str
    ident: str
    queue: str
    in_flight: int
    available: int
    held: int
    active: bool


@dataclass(frozen=True, slots=True)
class Sort:
    """The column the queues are sorted by; numbers biggest first unless reversed."""

    column: str = "name"
    descending: bool = False

    @classmethod
    def by(cls, column: str) -> Sort:
        index = SORT_KEYS.index(column)  # ValueError for a column there is not
        return cls(column, QUEUE_COLUMNS[index].numeric)

    def reversed(self) -> Sort:
        return Sort(self.column, not self.descending)

    def step(self, n: int) -> Sort:
        """The column ``n`` places to the right (left when negative), wrapping round."""
        return Sort.by(SORT_KEYS[(SORT_KEYS.index(self.column) + n) % len(SORT_KEYS)])

    def pick(self, column: str) -> Sort:
        """Sort by ``column``; picking the current column again reverses it."""
        return self.reversed() if column == self.column else Sort.by(column)


def _num(v: Any) -> float:
    """A number from the STATS map; anything else (a missing or odd field) is 0."""
    return v if isinstance(v, int | float) and not isinstance(v, bool) else 0


def _int(v: Any) -> int:
    return int(_num(v))


def _map(v: Any) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}


def clean(text: object, limit: int = NAME_LIMIT) -> str:
    """``text`` for one cell: control and format characters shown escaped, at most
    ``limit`` characters."""
    t = str(text)
    if not t.isprintable():
        t = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode()
                    for ch in t)
    return t if len(t) <= limit else t[:limit - 3] + "..."


def rate(key: str, q: Mapping[str, Any], before: Mapping[str, Any] | None, dt: float) -> float:
    """Per second over the last ``dt`` seconds, from the counter's growth; the broker's
    own rate when there is no earlier answer or the counter went back (a new broker)."""
    counter = RATE_COUNTERS[key]
    if before is not None and dt > 0:
        grown = _num(q.get(counter)) - _num(before.get(counter))
        if grown >= 0:
            return grown / dt
    return float(_num(_map(q.get("rates")).get(key)))


def queue_rows(stats: Mapping[str, Any], prev: Mapping[str, Any] | None, dt: float
               ) -> list[QueueRow]:
    """One row per queue of ``stats``; ``prev`` is the answer ``dt`` seconds earlier."""
    same = prev is not None and prev.get("broker") == stats.get("broker")
    earlier = _map(prev.get("queues")) if prev is not None and same else {}
    rows = []
    for name, raw in _map(stats.get("queues")).items():
        q = _map(raw)
        before = _map(earlier[name]) if name in earlier else None
        rows.append(QueueRow(
            name=str(name), ready=_int(q.get("ready")), delayed=_int(q.get("delayed")),
            in_flight=_int(q.get("in_flight")), consumers=_int(q.get("consumers")),
            dead=_int(q.get("dead")), publish=rate("publish", q, before, dt),
            deliver=rate("deliver", q, before, dt), ack=rate("ack", q, before, dt),
            oldest=float(_num(q.get("oldest_age"))), paused=q.get("paused") is True))
    return rows


def consumer_rows(stats: Mapping[str, Any]) -> list[ConsumerRow]:
    """One row per (peer, queue it consumes)."""
    rows = []
    for ident, raw in _map(stats.get("peers")).items():
        p = _map(raw)
        for queue, sub in _map(p.get("subs")).items():
            s = _map(sub)
            rows.append(ConsumerRow(
                peer=str(p.get("name") or "?"), ident=str(ident), queue=str(queue),
                in_flight=_int(s.get("in_flight")), available=_int(s.get("available")),
                held=_int(p.get("held")), active=s.get("active", True) is not False))
    return rows


def sort_queues(rows: list[QueueRow], sort: Sort) -> list[QueueRow]:
    by_name = sorted(rows, key=lambda r: r.name)  # ties stay in name order
    if sort.column == "name":
        return by_name[::-1] if sort.descending else by_name
    return sorted(by_name, key=lambda r: getattr(r, sort.column), reverse=sort.descending)


def sort_consumers(rows: list[ConsumerRow], queues: list[QueueRow]) -> list[ConsumerRow]:
    """In the queues' order (so the sort moves them too), busiest first in a queue."""
    order = {q.name: i for i, q in enumerate(queues)}
    return sorted(rows, key=lambda r: (order.get(r.queue, len(order)), r.queue,
                                       -r.in_flight, r.peer, r.ident))


def age(seconds: float) -> str:
    if seconds <= 0:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    s = int(seconds)
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _cells(r: QueueRow) -> list[Text]:
    return [Text(clean(r.name)), *(Text(f"{n:,}") for n in (
        r.ready, r.delayed, r.in_flight, r.consumers, r.dead)),
        *(Text(f"{x:,.1f}") for x in (r.publish, r.deliver, r.ack)),
        Text(age(r.oldest)), Text("paused", style="bold yellow") if r.paused else Text("")]


def _caption(t: Table, rows: int, shown: int, what: str) -> Table:
    if not rows:
        t.caption = Text(f"no {what}s", style="dim")
    elif rows > shown:
        t.caption = Text(f"... {rows - shown} more {what}(s) below", style="dim")
    return t


def queue_table(rows: list[QueueRow], sort: Sort, shown: int, arrows: tuple[str, str]
                ) -> Table:
    t = Table(title=Text("queues", style="bold"), title_justify="left", box=box.SIMPLE_HEAD,
              show_edge=False, caption_justify="left")
    for col in QUEUE_COLUMNS:
        mark = (arrows[1] if sort.descending else arrows[0]) if col.key == sort.column else ""
        head = Text(col.title + mark, style="bold reverse" if mark else "")
        if col.key == "name":
            t.add_column(head, no_wrap=True, overflow="ellipsis", min_width=8, max_width=32)
        else:  # the heads stay whole; the name column gives way
            t.add_column(head, justify="right" if col.numeric else "left", no_wrap=True,
                         min_width=len(head))
    for r in rows[:shown]:
        t.add_row(*_cells(r))
    return _caption(t, len(rows), shown, "queue")


def consumer_table(rows: list[ConsumerRow], shown: int) -> Table:
    t = Table(title=Text("consumers", style="bold"), title_justify="left",
              box=box.SIMPLE_HEAD, show_edge=False, caption_justify="left")
    t.add_column(Text("peer"), no_wrap=True, overflow="ellipsis", max_width=40)
    t.add_column(Text("id"), no_wrap=True, style="dim")
    t.add_column(Text("queue"), no_wrap=True, overflow="ellipsis", max_width=40)
    for title in ("in flight", "credit", "held"):
        t.add_column(Text(title), justify="right", no_wrap=True)
    t.add_column(Text(""), no_wrap=True)
    for r in rows[:shown]:
        t.add_row(Text(clean(r.peer)), Text(clean(r.ident, 32)), Text(clean(r.queue)),
                  Text(f"{r.in_flight:,}"), Text(f"{r.available:,}"), Text(f"{r.held:,}"),
                  Text("" if r.active else "cancelled", style="yellow"))
    return _caption(t, len(rows), shown, "consumer")


TABLE_CHROME = 4  # title, column heads, the line under them, a caption


def budget(height: int | None, top: int, queues: int, consumers: int) -> tuple[int, int]:
    """How many queue and consumer rows fit in ``height`` lines below ``top`` lines of
    header: consumers get up to a third, queues the rest."""
    if height is None:
        return queues, consumers
    room = max(2, height - top - 2 * TABLE_CHROME)
    cons = min(consumers, max(1, room // 3))
    return max(1, room - cons), cons


HELP = "q quit  s/S next/previous column  1-9,0 Nth column (again: reverse)  r reverse"


class TopView:
    """The state of one ``zq top`` screen: the latest STATS answer and the one before
    it, the sort, and the error of the last refresh if it failed. Times are the
    caller's clock (seconds, monotonic), passed in."""

    def __init__(self, sort: Sort | None = None, interval: float = 1.0, keys: bool = True
                 ) -> None:
        self.sort = sort or Sort()
        self.interval = interval
        self.keys = keys  # whether the frame lists the keys (not in a one-frame print)
        self.stats: Mapping[str, Any] | None = None
        self.prev: Mapping[str, Any] | None = None
        self.dt = 0.0  # seconds between prev and stats
        self.at: float | None = None  # when stats came
        self.error: str | None = None

    def update(self, stats: Mapping[str, Any], now: float) -> None:
        if self.stats is not None and self.at is not None:
            self.prev, self.dt = self.stats, now - self.at
        self.stats, self.at, self.error = stats, now, None

    def failed(self, error: str) -> None:
        """The last refresh failed: ``error`` is shown above the last answer's tables."""
        self.error = error

    def press(self, key: str) -> bool:
        """Act on one key; True when it asks to quit."""
        if key in ("q", "Q"):
            return True
        if key == "r":
            self.sort = self.sort.reversed()
        elif key in ("s", "S"):
            self.sort = self.sort.step(1 if key == "s" else -1)
        elif key.isdigit() and key.isascii():
            self.sort = self.sort.pick(SORT_KEYS[(int(key) - 1) % 10])
        return False

    def rows(self) -> tuple[list[QueueRow], list[ConsumerRow]]:
        if self.stats is None:
            return [], []
        queues = sort_queues(queue_rows(self.stats, self.prev, self.dt), self.sort)
        return queues, sort_consumers(consumer_rows(self.stats), queues)

    def header(self, now: float) -> list[Text]:
        s = self.stats
        if s is None:
            lines = [Text("zq top: waiting for the broker's first answer", style="bold")]
        else:
            c, store = _map(s.get("counters")), _map(s.get("store"))
            queues, peers = _map(s.get("queues")), _map(s.get("peers"))
            line = Text("zq top", style="bold") + Text(f"  broker {clean(s.get('broker'), 40)}")
            line.append(f"  queues {_int(s.get('queues_total', len(queues))):,}"
                        f"  peers {_int(s.get('peers_total', len(peers))):,}"
                        f"  published {_int(c.get('published')):,}"
                        f"  delivered {_int(c.get('delivered')):,}"
                        f"  acked {_int(c.get('acked')):,}")
            if store:
                line.append(f"  store {clean(store.get('kind'), 20)}")
            if store.get("full"):
                line.append("  STORE FULL", style="bold red")
            lines = [line]
        col = QUEUE_COLUMNS[SORT_KEYS.index(self.sort.column)]
        order = "descending" if self.sort.descending else "ascending"
        keys = f"; every {self.interval:g}s  | {HELP}" if self.keys else ""
        lines.append(Text(f"sorted by {col.title}, {order}{keys}", style="dim"))
        if self.error is not None:
            ago = f" (last answer {now - self.at:.0f}s ago)" if self.at is not None else ""
            lines.append(Text(f"{clean(self.error, 200)}; retrying{ago}",
                              style="bold red"))
        return lines

    def render(self, now: float, height: int | None = None, ascii_only: bool = False
               ) -> Group:
        """One frame; with ``height``, rows are cut to fit that many lines."""
        head = self.header(now)
        queues, consumers = self.rows()
        nq, nc = budget(height, len(head), len(queues), len(consumers))
        arrows = (" ^", " v") if ascii_only else (" \u2191", " \u2193")
        for line in head if height is not None else ():  # one line each: the budget holds
            line.no_wrap, line.overflow = True, "ellipsis"
        return Group(*head, queue_table(queues, self.sort, nq, arrows),
                     consumer_table(consumers, nc))
