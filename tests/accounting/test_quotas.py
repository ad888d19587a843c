"""Quotas' pure logic: configuration, calendar periods, what applies to whom, the figures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from aiinfn_hub.accounting.quotas import (
    Adjustment,
    Quota,
    QuotaStanding,
    adjustment_key,
    applicable,
    check_catalog,
    counted_since,
    describe,
    for_work,
    parse_quotas,
    period_bounds,
    refusal,
    standing_of,
)

NOW = datetime(2026, 12, 17, 15, 4, 5, tzinfo=UTC)  # a Thursday
CONFIG = {
    "cms-a100": {"scope": "project", "subject": "cms", "model": "a100", "period": "month",
                 "hours": 500},
    "users-weekly": {"scope": "user", "period": "week", "hours": 50},
    "alice-weekly": {"scope": "user", "subject": "alice", "period": "week", "hours": 80},
    "users-t4-daily": {"scope": "user", "subject": "*", "model": "t4", "period": "day",
                       "hours": 4.5},
}  # fmt: skip
NAMES = {"a100": "NVIDIA A100", "t4": "NVIDIA T4"}


def standing(**fields) -> QuotaStanding:
    values = {
        "scope": "project",
        "subject": "cms",
        "model": "a100",
        "period": "month",
        "period_start": datetime(2026, 12, 1, tzinfo=UTC),
        "period_end": datetime(2027, 1, 1, tzinfo=UTC),
        "limit_hours": 500.0,
        "used_hours": 500.0,
    }
    return QuotaStanding(**{**values, **fields})


def test_parse_quotas_in_name_order_with_defaults():
    assert parse_quotas(CONFIG) == (
        Quota("alice-weekly", "user", "alice", None, "week", 80.0),
        Quota("cms-a100", "project", "cms", "a100", "month", 500.0),
        Quota("users-t4-daily", "user", "*", "t4", "day", 4.5),
        Quota("users-weekly", "user", "*", None, "week", 50.0),
    )
    assert parse_quotas({}) == ()


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"scope": "group", "period": "day", "hours": 1}, "scope must be one of project, user"),
        ({"scope": "user", "period": "year", "hours": 1}, "period must be one of day, week, month"),
        ({"scope": "user", "period": "day", "hours": -1}, "hours must be a number from 0"),
        ({"scope": "user", "period": "day", "hours": "5"}, "hours must be a number from 0"),
        ({"scope": "user", "period": "day", "hours": True}, "hours must be a number from 0"),
        ({"scope": "user", "period": "day"}, "hours must be a number"),
        ({"scope": "user", "period": "day", "hours": 1, "gpus": 2}, "give a mapping with keys"),
        ({"scope": "user", "period": "day", "hours": 1, "model": "A 100"}, "model must be"),
        ({"scope": "user", "period": "day", "hours": 1, "subject": ""}, "subject must be a user"),
        ("50 hours", "give a mapping"),
    ],
)
def test_parse_quotas_names_the_quota_and_field(entry, message):
    with pytest.raises(ValueError) as raised:
        parse_quotas({"q": entry})
    assert str(raised.value).startswith("quota 'q': ")
    assert message in str(raised.value)


def test_parse_quotas_refuses_a_bad_name():
    with pytest.raises(ValueError, match="quota 'Big Q': the name must be"):
        parse_quotas({"Big Q": {"scope": "user", "period": "day", "hours": 1}})


def test_check_catalog():
    accelerators = {"cpu": "cpu", "a100": "gpu", "t4": "gpu"}
    check_catalog(parse_quotas(CONFIG), accelerators, ["cms", "lhcb"])
    with pytest.raises(ValueError, match="quota 'cms-a100': no project 'cms' in the catalog"):
        check_catalog(parse_quotas(CONFIG), accelerators, ["lhcb"])
    bad = parse_quotas({"q": {"scope": "user", "model": "cpu", "period": "day", "hours": 1}})
    with pytest.raises(ValueError, match=r"quota 'q': model must be an accelerator .*\(a100, t4\)"):
        check_catalog(bad, accelerators, [])
    bad = parse_quotas({"q": {"scope": "user", "model": "v100", "period": "day", "hours": 1}})
    with pytest.raises(ValueError, match="model must be an accelerator"):
        check_catalog(bad, accelerators, [])


def test_period_bounds_are_calendar_periods_in_utc():
    assert period_bounds("day", NOW) == (
        datetime(2026, 12, 17, tzinfo=UTC),
        datetime(2026, 12, 18, tzinfo=UTC),
    )
    assert period_bounds("week", NOW) == (
        datetime(2026, 12, 14, tzinfo=UTC),
        datetime(2026, 12, 21, tzinfo=UTC),
    )
    assert period_bounds("month", NOW) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    # A time in another zone counts in UTC: 00:30 in Rome on the 1st is still November in UTC.
    rome = datetime(2026, 12, 1, 0, 30, tzinfo=ZoneInfo("Europe/Rome"))
    assert period_bounds("month", rome)[0] == datetime(2026, 11, 1, tzinfo=UTC)
    assert period_bounds("month", datetime(2028, 2, 29, 23, 59, 59, tzinfo=UTC)) == (
        datetime(2028, 2, 1, tzinfo=UTC),
        datetime(2028, 3, 1, tzinfo=UTC),
    )
    assert period_bounds("week", datetime(2026, 12, 14, tzinfo=UTC))[0] == datetime(
        2026, 12, 14, tzinfo=UTC
    )
    with pytest.raises(ValueError):
        period_bounds("year", NOW)


def test_applicable_named_subject_replaces_everyone_of_same_model_and_period():
    quotas = parse_quotas(CONFIG)
    names = [(q.name, s) for q, s in applicable(quotas, "alice", ["cms", "lhcb", "cms"])]
    assert names == [
        ("alice-weekly", "alice"),
        ("users-t4-daily", "alice"),
        ("cms-a100", "cms"),
    ]
    names = [(q.name, s) for q, s in applicable(quotas, "bob", [])]
    assert names == [("users-t4-daily", "bob"), ("users-weekly", "bob")]
    every_project = parse_quotas({"p": {"scope": "project", "period": "day", "hours": 9}})
    assert [s for _, s in applicable(every_project, "bob", ["cms", "lhcb"])] == ["cms", "lhcb"]


def test_standing_of_counts_its_model_or_every_accelerator():
    seconds = {"a100": 3600 * 400, "t4": 1800, "": 0}
    (cms,) = parse_quotas({"cms-a100": CONFIG["cms-a100"]})
    assert standing_of(cms, "cms", NOW, seconds) == standing(used_hours=400.0)
    (weekly,) = parse_quotas({"w": CONFIG["users-weekly"]})
    got = standing_of(weekly, "bob", NOW, seconds, Adjustment(extra_hours=10.0))
    assert got.used_hours == 400.5
    assert got.limit_hours == 60.0
    assert got.remaining_hours == 0.0
    assert got.exhausted
    assert (got.period_start, got.period_end) == period_bounds("week", NOW)
    assert standing_of(weekly, "bob", NOW, {}).remaining_hours == 50.0


def test_exhausted_only_when_nothing_is_left():
    assert not standing(used_hours=499.99).exhausted
    assert standing(used_hours=499.99).remaining_hours == pytest.approx(0.01)
    assert standing(used_hours=500.0).exhausted
    assert standing(limit_hours=0.0, used_hours=0.0).exhausted


def test_counted_since_a_reset_within_the_period():
    start = datetime(2026, 12, 1, tzinfo=UTC)
    assert counted_since(start, Adjustment()) == start
    reset = datetime(2026, 12, 10, 9, 0, tzinfo=UTC)
    assert counted_since(start, Adjustment(reset_at=reset)) == reset
    # A reset stored for this period is never before it; an earlier one changes nothing.
    assert counted_since(start, Adjustment(reset_at=start - timedelta(days=3))) == start


def test_adjustment_key():
    (cms,) = parse_quotas({"cms-a100": CONFIG["cms-a100"]})
    (weekly,) = parse_quotas({"w": CONFIG["users-weekly"]})
    assert adjustment_key(cms, "cms", NOW) == (
        "project", "cms", "a100", "month", datetime(2026, 12, 1, tzinfo=UTC)
    )  # fmt: skip
    assert adjustment_key(weekly, "bob", NOW)[2] == ""


def test_for_work_model_and_project():
    project = standing()
    other_project = standing(subject="lhcb")
    user_all = standing(scope="user", subject="alice", model=None)
    user_t4 = standing(scope="user", subject="alice", model="t4")
    every = [project, other_project, user_all, user_t4]
    assert for_work(every, "a100", "cms") == [project, user_all]
    assert for_work(every, "a100") == [user_all]  # a notebook server: no project
    assert for_work(every, "t4", "lhcb") == [user_all, user_t4]
    assert for_work(every, "") == []  # CPU only: no accelerator hours


def test_describe_and_refusal_give_the_figures():
    assert describe(standing(), NAMES, "alice") == (
        "project cms has used 500.0 of its 500 hours of NVIDIA A100 this month "
        "(resets 2027-01-01 00:00 UTC)"
    )
    mine = standing(scope="user", subject="alice", model=None, period="week",
                    period_end=datetime(2026, 12, 21, tzinfo=UTC), limit_hours=50.0,
                    used_hours=49.99)  # fmt: skip
    # Cut, never rounded up: 49.99 is not shown as the 50.0 that would be exhausted.
    assert describe(mine, NAMES, "alice") == (
        "you have used 49.9 of your 50 GPU-hours this week (resets 2026-12-21 00:00 UTC)"
    )
    assert describe(mine, NAMES, "admin").startswith("user alice has used 49.9 of its 50")
    assert refusal([mine], NAMES, "alice") is None
    assert refusal([mine, standing()], NAMES, "alice") == (
        "project cms has used 500.0 of its 500 hours of NVIDIA A100 this month "
        "(resets 2027-01-01 00:00 UTC); new work is refused until then"
    )
