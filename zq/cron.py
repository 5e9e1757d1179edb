"""Five-field cron expressions, in UTC: ``minute hour day-of-month month day-of-week``.

Each field is ``*``, a number, a range ``a-b``, any of those with a step ``/n``, or a
comma-separated list of them. Day of week is 0-6 from Sunday (7 is Sunday too).
As in Vixie cron, when both day fields are restricted a day matching either runs.
No I/O; times are wall-clock seconds since the epoch.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from zq.errors import InvalidArgument

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
           ("day of week", 0, 7))


def _field(text: str, name: str, lo: int, hi: int) -> frozenset[int]:
    out: set[int] = set()
    for part in text.split(","):
        rng, _, step_s = part.partition("/")
        try:
            step = int(step_s) if step_s else 1
            if rng == "*":
                a, b = lo, hi
            elif "-" in rng:
                a_s, b_s = rng.split("-", 1)
                a, b = int(a_s), int(b_s)
            else:
                a = b = int(rng)
                if step_s:
                    b = hi
        except ValueError:
            raise InvalidArgument(f"cron {name}: cannot read {part!r}") from None
        if step < 1:
            raise InvalidArgument(f"cron {name}: the step in {part!r} must be at least 1")
        if not lo <= a <= b <= hi:
            raise InvalidArgument(f"cron {name}: {part!r} is outside {lo}-{hi}")
        out.update(range(a, b + 1, step))
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # day of month is "*"
    any_weekday: bool  # day of week is "*"

    @classmethod
    def parse(cls, expr: str) -> Cron:
        parts = expr.split()
        if len(parts) != 5:
            raise InvalidArgument(f"cron needs 5 fields (minute hour day month weekday), "
                                  f"got {len(parts)} in {expr!r}")
        sets = [_field(p, *spec) for p, spec in zip(parts, _FIELDS, strict=True)]
        weekdays = frozenset(d % 7 for d in sets[4])
        return cls(sets[0], sets[1], sets[2], sets[3], weekdays, parts[2] == "*",
                   parts[4] == "*")

    def _day_ok(self, d: datetime) -> bool:
        if d.month not in self.months:
            return False
        dom = d.day in self.days
        dow = (d.weekday() + 1) % 7 in self.weekdays  # Python: Monday 0; cron: Sunday 0
        if self.any_day and self.any_weekday:
            return True
        if self.any_day:
            return dow
        if self.any_weekday:
            return dom
        return dom or dow

    def next_after(self, ts: float) -> float:
        """The first matching minute strictly after ``ts``."""
        t = datetime.fromtimestamp(ts, UTC).replace(second=0, microsecond=0)
        t += timedelta(minutes=1)
        limit = t + timedelta(days=366 * 5)  # Feb 29 on a Monday can take years
        while t < limit:
            if not self._day_ok(t):
                t = (t + timedelta(days=1)).replace(hour=0, minute=0)
                continue
            if t.hour not in self.hours:
                t = (t + timedelta(hours=1)).replace(minute=0)
                continue
            if t.minute not in self.minutes:
                t += timedelta(minutes=1)
                continue
            return float(calendar.timegm(t.timetuple()))
        raise InvalidArgument("cron expression never matches")
