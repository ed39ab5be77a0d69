"""`on.schedule`: when a five-field cron expression fires, and which minutes a scheduler that
wakes up now and then has to look at."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from croniter import CroniterBadDateError, croniter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.parser import cron_problem, parse_workflow
from pipelines.schedule import MAX_MINUTES, cron_matches, minutes_between

CORPUS = Path(__file__).parent / "corpus"
MINUTE = timedelta(minutes=1)


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, **more: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC, **more)


def fires(expression: str, start: datetime, end: datetime) -> list[datetime]:
    """The minutes in (start, end] at which `expression` fires."""
    return [m for m in minutes_between(start, end) if cron_matches(expression, m)]


def every_minute(start: datetime, days: int) -> list[datetime]:
    return [start + index * MINUTE for index in range(days * 24 * 60)]


# ---------------------------------------------------------------------------------------------
# cron_matches


def test_every_quarter_hour_fires_at_00_15_30_45_only() -> None:
    day = every_minute(at(2024, 5, 17), 1)
    fired = [m for m in day if cron_matches("*/15 * * * *", m)]
    assert len(fired) == 96
    assert {m.minute for m in fired} == {0, 15, 30, 45}
    assert {m.hour for m in fired} == set(range(24))


def test_monday_at_three_fires_only_on_mondays_at_03_00() -> None:
    start = at(2024, 1, 1)  # a Monday
    fired = [m for m in every_minute(start, 28) if cron_matches("0 3 * * 1", m)]
    assert fired == [at(2024, 1, day, 3) for day in (1, 8, 15, 22)]
    assert all(m.weekday() == 0 for m in fired)


def test_midnight_on_the_first_fires_once_a_month() -> None:
    fired = [
        at(2023, 1, 1) + day * timedelta(days=1) + hour * timedelta(hours=1)
        for day in range(366)
        for hour in range(24)
    ]
    fired = [m for m in fired if cron_matches("0 0 1 * *", m)]
    assert fired == [at(2023, month, 1) for month in range(1, 13)] + [at(2024, 1, 1)]
    assert not cron_matches("0 0 1 * *", at(2023, 1, 1, 0, 1))
    assert not cron_matches("0 0 1 * *", at(2023, 1, 1, 1, 0))


def _midnights(year: int) -> list[datetime]:
    return [at(year, 1, 1) + index * timedelta(days=1) for index in range(365)]


def test_day_of_month_and_day_of_week_are_ored_when_both_are_restricted() -> None:
    midnights = _midnights(2023)
    thirteenths = {m for m in midnights if m.day == 13}
    fridays = {m for m in midnights if m.weekday() == 4}
    assert {m for m in midnights if cron_matches("0 0 13 * 5", m)} == thirteenths | fridays
    assert {m for m in midnights if cron_matches("0 0 13 * FRI", m)} == thirteenths | fridays


def test_day_of_month_and_day_of_week_are_anded_when_either_is_a_star() -> None:
    midnights = _midnights(2023)
    assert {m for m in midnights if cron_matches("0 0 13 * *", m)} == {
        m for m in midnights if m.day == 13
    }
    assert {m for m in midnights if cron_matches("0 0 * * 5", m)} == {
        m for m in midnights if m.weekday() == 4
    }
    # Month and day-of-week are ANDed: Mondays in January only.
    assert {m for m in midnights if cron_matches("0 0 * JAN MON", m)} == {
        m for m in midnights if m.month == 1 and m.weekday() == 0
    }


def test_a_step_restricts_the_day_of_month() -> None:
    # croniter's rule, not Vixie cron's "bug": */2 is a restriction, so the fields are ORed.
    midnights = _midnights(2023)
    assert {m for m in midnights if cron_matches("0 0 */2 * MON", m)} == {
        m for m in midnights if m.day % 2 == 1 or m.weekday() == 0
    }


@pytest.mark.parametrize(
    ("expression", "moment", "expected"),
    [
        ("0 0 * JAN MON", at(2024, 1, 1), True),
        ("0 0 * jan mon", at(2024, 1, 1), True),
        ("0 0 * Jan Mon", at(2024, 1, 1), True),
        ("0 0 * FEB MON", at(2024, 1, 1), False),
        ("0 12 * * MON-FRI", at(2024, 1, 5, 12), True),  # Friday
        ("0 12 * * MON-FRI", at(2024, 1, 6, 12), False),  # Saturday
        ("0 0 1 JAN,JUL *", at(2024, 7, 1), True),
        ("0 0 1 JAN,JUL *", at(2024, 6, 1), False),
        ("0 0 * * SUN", at(2024, 1, 7), True),
        ("0 0 * * 0", at(2024, 1, 7), True),
        ("0 0 * * 7", at(2024, 1, 7), True),  # 7 is Sunday too
        ("0 0 * * 7", at(2024, 1, 6), False),
        ("0 0 * * 5-7", at(2024, 1, 7), True),
        ("0 0 * * FRI-MON", at(2024, 1, 8), True),  # a wrapping range
        ("0 0 * * FRI-MON", at(2024, 1, 9), False),
        ("0 22-2 * * *", at(2024, 1, 9, 1), True),
        ("0 22-2 * * *", at(2024, 1, 9, 3), False),
        ("5/20 * * * *", at(2024, 1, 9, 3, 45), True),
        ("5/20 * * * *", at(2024, 1, 9, 3, 40), False),
        ("10-20/5 * * * *", at(2024, 1, 9, 3, 15), True),
        ("10-20/5 * * * *", at(2024, 1, 9, 3, 25), False),
        ("0 0 29 2 *", at(2024, 2, 29), True),
        ("30 4 * * 1-5", at(2024, 1, 12, 4, 30), True),
        ("* * * * *", at(1999, 12, 31, 23, 59), True),
        # A '*' in a list makes the whole field unrestricted, as croniter reads it.
        ("*,5 * * * *", at(2024, 1, 9, 3, 7), True),
        ("0 0 *,1 * MON", at(2024, 1, 8), True),
        ("0 0 *,1 * MON", at(2024, 1, 2), False),
    ],
)
def test_cron_matches(expression: str, moment: datetime, expected: bool) -> None:
    assert cron_matches(expression, moment) is expected


def test_seconds_are_ignored() -> None:
    assert cron_matches("0 3 * * *", at(2024, 1, 1, 3, 0, second=59, microsecond=999999))
    assert not cron_matches("0 3 * * *", at(2024, 1, 1, 2, 59, second=59))


def test_other_timezones_are_converted_to_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert cron_matches("0 3 * * *", datetime(2024, 1, 1, 5, 0, tzinfo=plus_two))
    assert not cron_matches("0 3 * * *", datetime(2024, 1, 1, 3, 0, tzinfo=plus_two))
    # Across midnight the UTC day decides the day fields.
    minus_five = timezone(timedelta(hours=-5))
    assert cron_matches("0 2 * * MON", datetime(2024, 1, 7, 21, 0, tzinfo=minus_five))


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        cron_matches("* * * * *", datetime(2024, 1, 1))


def test_whitespace_between_fields_does_not_matter() -> None:
    assert cron_matches(" 0  3 *\t* * ", at(2024, 1, 1, 3))


def test_an_expression_that_never_fires_is_valid_and_never_matches() -> None:
    assert cron_problem("0 0 30 2 *") is None
    assert not any(cron_matches("0 0 30 2 *", m) for m in _midnights(2024))


@pytest.mark.parametrize(
    "expression",
    [
        "",
        "* * * *",
        "0 0 * * * *",
        "61 * * * *",
        "0 24 * * *",
        "0 0 0 * *",
        "0 0 * 13 *",
        "0 0 * * 8",
        "@daily",
        "0 0 L * *",
        "0 0 * * 1#2",
        "H * * * *",
        "0 0 ? * *",
        "*/0 * * * *",
        "0 0 * * MONDAY",
        "1,,2 * * * *",
    ],
)
def test_invalid_expressions_raise_the_parser_s_message(expression: str) -> None:
    message = cron_problem(expression)
    assert message is not None
    with pytest.raises(ValueError) as caught:
        cron_matches(expression, at(2024, 1, 1))
    assert str(caught.value) == message


def test_a_non_string_expression_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        cron_matches(None, at(2024, 1, 1))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# The valid corpus: every schedule the parser accepted can be evaluated, and fires when croniter
# says it fires.


def _corpus_schedules() -> list[str]:
    schedules = []
    for path in sorted(CORPUS.glob("valid/*.y*ml")):
        workflow = parse_workflow(path.read_text(encoding="utf-8"), str(path))
        schedules.extend(workflow.triggers.schedule)
    return schedules


CORPUS_SCHEDULES = _corpus_schedules()


def test_the_corpus_has_schedules() -> None:
    assert len(CORPUS_SCHEDULES) >= 3


@pytest.mark.parametrize("expression", CORPUS_SCHEDULES)
def test_corpus_schedules_fire_when_croniter_says(expression: str) -> None:
    start = at(2024, 2, 26)  # a Monday, across a leap day
    window = every_minute(start, 8)
    iterator = croniter(expression, start - MINUTE)
    expected = []
    while (fire := iterator.get_next(datetime)) <= window[-1]:
        expected.append(fire)
    assert [m for m in window if cron_matches(expression, m)] == expected
    assert expected


# ---------------------------------------------------------------------------------------------
# Generated expressions: whatever the parser accepts, cron_matches evaluates as croniter does.

PROPERTY_SETTINGS = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
FIELDS = [(0, 59, []), (0, 23, []), (1, 31, []), (1, 12, MONTHS), (0, 7, DAYS)]


def _spelled(draw: st.DrawFn, name: str) -> str:
    return draw(st.sampled_from([name, name.lower(), name.capitalize()]))


@st.composite
def field_values(draw: st.DrawFn, lowest: int, highest: int, names: list[str]) -> str:
    number = draw(st.integers(lowest, highest))
    if names and draw(st.booleans()):
        index = number % len(names)  # day-of-week 7 has no name of its own: SUN
        return _spelled(draw, names[index - 1 if names is MONTHS else index])
    return str(number)


@st.composite
def field_items(draw: st.DrawFn, lowest: int, highest: int, names: list[str]) -> str:
    value = field_values(lowest, highest, names)
    step = st.integers(1, highest + 2).map(lambda n: f"/{n}")
    base = draw(
        st.one_of(
            st.just("*"),
            value,
            st.tuples(value, value).map(lambda pair: f"{pair[0]}-{pair[1]}"),
        )
    )
    return base + draw(st.one_of(st.just(""), step))


@st.composite
def cron_expressions(draw: st.DrawFn) -> str:
    fields = []
    for lowest, highest, names in FIELDS:
        items = draw(st.lists(field_items(lowest, highest, names), min_size=1, max_size=3))
        fields.append(",".join(items))
    return draw(st.sampled_from([" ", "  ", "\t"])).join(fields)


minutes = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).map(lambda moment: moment.replace(second=0, microsecond=0))


@PROPERTY_SETTINGS
@given(expression=cron_expressions(), moment=minutes)
def test_generated_expressions_are_valid_and_match_like_croniter(
    expression: str, moment: datetime
) -> None:
    assert cron_problem(expression) is None, cron_problem(expression)
    assert cron_matches(expression, moment) == croniter.match(expression, moment)
    try:
        following = croniter(expression, moment).get_next(datetime)
    except CroniterBadDateError:
        return  # an expression that never fires (Feb 30)
    assert cron_matches(expression, following)
    assert cron_matches(expression, following - MINUTE) == croniter.match(
        expression, following - MINUTE
    )


cron_texts = st.text(alphabet="0123456789*/-, LMONJAFRIhsun#?@\t", max_size=24)


@PROPERTY_SETTINGS
@given(expression=st.one_of(cron_texts, cron_expressions()), moment=minutes)
def test_cron_matches_accepts_exactly_what_the_parser_accepts(
    expression: str, moment: datetime
) -> None:
    problem = cron_problem(expression)
    if problem is None:
        assert isinstance(cron_matches(expression, moment), bool)
    else:
        with pytest.raises(ValueError):
            cron_matches(expression, moment)


# ---------------------------------------------------------------------------------------------
# minutes_between


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (at(2024, 1, 1, 10, 0), at(2024, 1, 1, 10, 3), [(10, 1), (10, 2), (10, 3)]),
        (
            at(2024, 1, 1, 10, 0, second=30),
            at(2024, 1, 1, 10, 3, second=59),
            [(10, 1), (10, 2), (10, 3)],
        ),
        (at(2024, 1, 1, 10, 0, second=59), at(2024, 1, 1, 10, 1), [(10, 1)]),
        (at(2024, 1, 1, 10, 0), at(2024, 1, 1, 10, 0, second=59), []),
        (at(2024, 1, 1, 10, 0, second=1), at(2024, 1, 1, 10, 0, second=59), []),
        (at(2024, 1, 1, 10, 0), at(2024, 1, 1, 10, 0), []),
        (at(2024, 1, 1, 10, 5), at(2024, 1, 1, 10, 0), []),
        (at(2024, 1, 1, 23, 59), at(2024, 1, 2, 0, 0), [(0, 0)]),
    ],
)
def test_minutes_between(start: datetime, end: datetime, expected: list[tuple[int, int]]) -> None:
    assert [(m.hour, m.minute) for m in minutes_between(start, end)] == expected


def test_the_start_is_excluded_and_the_end_included() -> None:
    start, end = at(2024, 1, 1, 10, 0), at(2024, 1, 1, 10, 2)
    assert minutes_between(start, end) == [at(2024, 1, 1, 10, 1), end]
    # So consecutive polls see each minute exactly once.
    later = at(2024, 1, 1, 10, 5, second=7)
    assert minutes_between(start, end) + minutes_between(end, later) == minutes_between(
        start, later
    )


def test_minutes_are_whole_aware_utc_minutes() -> None:
    plus_two = timezone(timedelta(hours=2))
    start = datetime(2024, 1, 1, 12, 0, 30, tzinfo=plus_two)
    found = minutes_between(start, start + timedelta(minutes=2))
    assert found == [at(2024, 1, 1, 10, 1), at(2024, 1, 1, 10, 2)]
    assert all(m.tzinfo is UTC and m.second == 0 and m.microsecond == 0 for m in found)


def test_a_day_is_kept_whole() -> None:
    end = at(2024, 1, 2, 10, 0)
    found = minutes_between(end - timedelta(days=1), end)
    assert MAX_MINUTES == 1440
    assert len(found) == 1440
    assert found[0] == end - timedelta(days=1) + MINUTE
    assert found[-1] == end


@pytest.mark.parametrize("gap", [timedelta(days=1, minutes=1), timedelta(days=400)])
def test_longer_gaps_keep_the_latest_day(gap: timedelta) -> None:
    end = at(2024, 1, 2, 10, 0, second=42)
    found = minutes_between(end - gap, end)
    assert len(found) == MAX_MINUTES
    assert found[-1] == at(2024, 1, 2, 10, 0)
    assert found[0] == at(2024, 1, 1, 10, 1)


def test_naive_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="start must be a timezone-aware datetime"):
        minutes_between(datetime(2024, 1, 1), at(2024, 1, 2))
    with pytest.raises(ValueError, match="end must be a timezone-aware datetime"):
        minutes_between(at(2024, 1, 1), datetime(2024, 1, 2))


instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@PROPERTY_SETTINGS
@given(start=instants, span=st.timedeltas(timedelta(minutes=-5), timedelta(days=3)))
def test_minutes_between_properties(start: datetime, span: timedelta) -> None:
    end = start + span
    found = minutes_between(start, end)
    assert len(found) <= MAX_MINUTES
    assert all(start < m <= end for m in found)
    assert all(m.second == 0 and m.microsecond == 0 and m.tzinfo is UTC for m in found)
    assert all(later - earlier == MINUTE for earlier, later in itertools.pairwise(found))
    if found:
        assert found[-1] + MINUTE > end  # the latest minutes are kept
    if len(found) < MAX_MINUTES:
        # Nothing left out: no whole minute after start precedes the first one found.
        first = found[0] if found else end.replace(second=0, microsecond=0) + MINUTE
        assert first - MINUTE <= start
