"""When `on.schedule` fires: five-field cron expressions evaluated minute by minute, in UTC.

Pure: the scheduler asks "which minutes have passed since I last looked?" (`minutes_between`) and
"does this expression fire at that minute?" (`cron_matches`); nothing here reads the clock.

GitHub documents POSIX cron; where cron implementations differ, croniter's reading is used:

- five fields: minute hour day-of-month month day-of-week; numbers, `*`, ranges, lists and steps;
  month (JAN-DEC) and day (SUN-SAT) names in any case; day-of-week 0 and 7 are both Sunday;
- day-of-month and day-of-week are ORed when both are restricted (`0 0 13 * FRI` fires on every
  13th and on every Friday) and ANDed when either is `*`. "Restricted" is croniter's default rule:
  a field is unrestricted when it is `*`, has `*` in a list (`*,5`), or lists every value while
  the other field contains a `*`; so a step such as `*/2` restricts (no Vixie "cron bug");
- a range may wrap (`FRI-MON`, `22-2`), as croniter reads it;
- everything is UTC, as on GitHub.

An expression is valid exactly when the workflow parser accepts it (`parser.cron_problem`): the
same check runs here, so a schedule the parser let through can always be evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from croniter import croniter

from pipelines.parser import cron_problem

__all__ = ["MAX_MINUTES", "cron_matches", "minutes_between"]

# One day: after a longer outage the scheduler catches up on the last day only, so that a
# restart after a week does not start seven days of every-minute schedules at once.
MAX_MINUTES = 24 * 60

_MINUTE = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class _Cron:
    """The values each field allows; None where the field is unrestricted."""

    minutes: frozenset[int] | None
    hours: frozenset[int] | None
    days: frozenset[int] | None
    months: frozenset[int] | None
    weekdays: frozenset[int] | None  # cron numbering: Sunday is 0

    def matches(self, moment: datetime) -> bool:
        if not (
            _allows(self.minutes, moment.minute)
            and _allows(self.hours, moment.hour)
            and _allows(self.months, moment.month)
        ):
            return False
        day = _allows(self.days, moment.day)
        weekday = _allows(self.weekdays, moment.isoweekday() % 7)
        if self.days is not None and self.weekdays is not None:
            return day or weekday
        return day and weekday


def _allows(values: frozenset[int] | None, value: int) -> bool:
    return values is None or value in values


@lru_cache(maxsize=1024)
def _compile(expression: str) -> _Cron:
    problem = cron_problem(expression)
    if problem is not None:
        raise ValueError(problem)
    # Only croniter's expansion is used, not its matcher: `croniter.match` builds an iterator
    # and searches back for the previous fire time on every call, while a set lookup stays cheap
    # for every workflow at each of the up to 1440 minutes of a catch-up.
    expanded, _ = croniter.expand(" ".join(expression.split()))
    # A '*' anywhere in a list ('*,5') makes the field unrestricted, as in croniter's matcher.
    fields = [
        None if "*" in values else frozenset(int(value) for value in values) for values in expanded
    ]
    weekdays = fields[4]
    return _Cron(
        minutes=fields[0],
        hours=fields[1],
        days=fields[2],
        months=fields[3],
        weekdays=None if weekdays is None else frozenset(day % 7 for day in weekdays),
    )


def _utc(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got the naive {moment}")
    return moment.astimezone(UTC)


def _floor_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def cron_matches(expression: str, minute: datetime) -> bool:
    """Does the five-field cron `expression` fire at `minute` (UTC; seconds are ignored)?

    Raises ValueError, with the parser's message, for an expression the parser would refuse,
    and for a naive datetime.
    """
    if not isinstance(expression, str):
        raise TypeError(f"a cron expression is a string, not {type(expression).__name__}")
    return _compile(expression).matches(_utc(minute, "minute"))


def minutes_between(start: datetime, end: datetime) -> list[datetime]:
    """The whole minutes m with start < m <= end, oldest first, as aware UTC datetimes.

    At most MAX_MINUTES of them: when more have passed, the latest MAX_MINUTES. Empty when
    `end` is not after `start`. Raises ValueError for naive datetimes.
    """
    first = _floor_minute(_utc(start, "start")) + _MINUTE
    last = _floor_minute(_utc(end, "end"))
    count = (last - first) // _MINUTE + 1
    if count <= 0:
        return []
    count = min(count, MAX_MINUTES)
    first = last - (count - 1) * _MINUTE
    return [first + index * _MINUTE for index in range(count)]
