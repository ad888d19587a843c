"""Quotas on accelerator hours (docs/accounting.md, "Quotas"): what applies to whom, and what is
left of each, from the ledger.

A quota (c.AiInfnAccounting.quotas, keyed by name) caps the accelerator unit-hours (GPU-hours
for a GPU) that a project or a user uses in a calendar period in UTC (day; week from Monday;
month), of one catalog model or of all accelerators. A subject "*" is every project, or every
user, each on its own; a quota naming a subject replaces the "*" one of the same model and
period for it. Usage is the ledger's: closed intervals and open ones up to now, to the second.
The rule is "new work is refused": work is refused once a quota that applies to it has no hours
left; work already running is never stopped. Admins add hours to, or restart the count of, one
subject's current period (quota_adjustments; `aiinfn-hub quota`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

PERIODS = ("day", "week", "month")
SCOPES = ("project", "user")
EVERYONE = "*"
MAX_HOURS = 10_000_000.0
_FIELDS = {"scope", "subject", "model", "period", "hours"}
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?$")
_SUBJECT = re.compile(r"^[\x21-\x7e]{1,64}$")


@dataclass(frozen=True)
class Quota:
    """One configured quota. `model` None: all accelerators (unit-hours of every model)."""

    name: str
    scope: str
    subject: str
    model: str | None
    period: str
    limit_hours: float


@dataclass(frozen=True)
class Adjustment:
    """An admin's change to one subject's current period: hours added, the count restarted."""

    extra_hours: float = 0.0
    reset_at: datetime | None = None


@dataclass(frozen=True)
class QuotaStanding:
    """One quota as it stands for one subject (a project, or a user) in the current period.
    `limit_hours` includes an admin's extra hours; `used_hours` counts from the period's start
    (or an admin's reset) up to now."""

    scope: str
    subject: str
    model: str | None
    period: str
    period_start: datetime
    period_end: datetime
    limit_hours: float
    used_hours: float

    @property
    def remaining_hours(self) -> float:
        """Hours left this period, never below 0."""
        return max(0.0, self.limit_hours - self.used_hours)

    @property
    def exhausted(self) -> bool:
        """No hours left: new work it applies to is refused."""
        return self.used_hours >= self.limit_hours

    def applies_to(self, model: str, project: str | None = None) -> bool:
        """Whether work on `model` ("" for CPU only) in `project` counts against this quota."""
        if not model or self.model not in (None, model):
            return False
        return self.scope == "user" or self.subject == project


def parse_quotas(config: Mapping[str, Any]) -> tuple[Quota, ...]:
    """c.AiInfnAccounting.quotas as Quota objects, in name order; ValueError naming the quota
    and the field that is wrong."""
    quotas = []
    for name in sorted(config):
        where = f"quota {name!r}"
        entry = config[name]
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"{where}: the name must be lower case letters, digits, - _ .")
        if not isinstance(entry, Mapping) or set(entry) - _FIELDS:
            raise ValueError(f"{where}: give a mapping with keys of {sorted(_FIELDS)}")
        quotas.append(_parse_entry(name, entry, where))
    return tuple(quotas)


def _parse_entry(name: str, entry: Mapping[str, Any], where: str) -> Quota:
    scope = entry.get("scope")
    if scope not in SCOPES:
        raise ValueError(f"{where}: scope must be one of {', '.join(SCOPES)}")
    subject = entry.get("subject", EVERYONE)
    if not isinstance(subject, str) or not _SUBJECT.match(subject):
        raise ValueError(f"{where}: subject must be a {scope} name, or * for every {scope}")
    model = entry.get("model")
    if model is not None and (not isinstance(model, str) or not _NAME.match(model)):
        raise ValueError(f"{where}: model must be an accelerator's catalog key (absent: all)")
    period = entry.get("period")
    if period not in PERIODS:
        raise ValueError(f"{where}: period must be one of {', '.join(PERIODS)}")
    hours = entry.get("hours")
    if isinstance(hours, bool) or not isinstance(hours, int | float) or not 0 <= hours <= MAX_HOURS:
        raise ValueError(f"{where}: hours must be a number from 0 to {MAX_HOURS:.0f}")
    return Quota(name, scope, subject, model, period, float(hours))


def check_catalog(
    quotas: Iterable[Quota], accelerators: Mapping[str, str], projects: Collection[str]
) -> None:
    """ValueError for a quota on a model the catalog lacks or that is CPU only (`accelerators`:
    key -> kind), or on a project it lacks."""
    for quota in quotas:
        where = f"quota {quota.name!r}"
        if quota.model is not None and accelerators.get(quota.model, "cpu") == "cpu":
            choices = ", ".join(k for k, kind in accelerators.items() if kind != "cpu")
            raise ValueError(f"{where}: model must be an accelerator of the catalog ({choices})")
        if quota.scope == "project" and quota.subject not in (EVERYONE, *projects):
            raise ValueError(f"{where}: no project {quota.subject!r} in the catalog")


def period_bounds(period: str, now: datetime) -> tuple[datetime, datetime]:
    """[start, end) of the calendar period in UTC holding `now`: a day, a week from Monday, a
    month."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day, day + timedelta(days=1)
    if period == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    if period == "month":
        start = day.replace(day=1)
        following = (start + timedelta(days=32)).replace(day=1)
        return start, following
    raise ValueError(f"unknown period {period!r}")


def applicable(
    quotas: Iterable[Quota], user: str, projects: Sequence[str]
) -> list[tuple[Quota, str]]:
    """(quota, subject) for each quota that applies to `user` ("" for none) and to each of
    `projects`: one naming the subject, else the "*" one of the same model and period."""
    quotas = tuple(quotas)
    found = []
    users = [user] if user else []
    for scope, subjects in (("user", users), ("project", list(dict.fromkeys(projects)))):
        for subject in subjects:
            named = [q for q in quotas if q.scope == scope and q.subject == subject]
            taken = {(q.model, q.period) for q in named}
            everyone = [
                q
                for q in quotas
                if q.scope == scope and q.subject == EVERYONE and (q.model, q.period) not in taken
            ]
            found += [(q, subject) for q in named + everyone]
    return found


def standing_of(
    quota: Quota,
    subject: str,
    now: datetime,
    unit_seconds: Mapping[str, int],
    adjustment: Adjustment = Adjustment(),
) -> QuotaStanding:
    """A quota's standing from the subject's unit-seconds by model over its counted window."""
    start, end = period_bounds(quota.period, now)
    if quota.model is None:
        used = sum(seconds for model, seconds in unit_seconds.items() if model)
    else:
        used = unit_seconds.get(quota.model, 0)
    return QuotaStanding(
        quota.scope,
        subject,
        quota.model,
        quota.period,
        start,
        end,
        quota.limit_hours + adjustment.extra_hours,
        used / 3600,
    )


def counted_since(standing_start: datetime, adjustment: Adjustment) -> datetime:
    """Where a period's count starts: its start, or an admin's later reset within it."""
    reset = adjustment.reset_at
    return reset if reset is not None and reset > standing_start else standing_start


def adjustment_key(
    quota: Quota, subject: str, now: datetime
) -> tuple[str, str, str, str, datetime]:
    """The key of a subject's adjustments to a quota's current period in quota_adjustments."""
    start, _ = period_bounds(quota.period, now)
    return (quota.scope, subject, quota.model or "", quota.period, start)


def for_work(
    standings: Iterable[QuotaStanding], model: str, project: str | None = None
) -> list[QuotaStanding]:
    """The standings that work on `model` in `project` counts against (none for CPU only)."""
    return [s for s in standings if s.applies_to(model, project)]


def refusal(
    standings: Iterable[QuotaStanding], model_names: Mapping[str, str], user: str
) -> str | None:
    """The message refusing new work, from the first exhausted standing; None if none is."""
    for standing in standings:
        if standing.exhausted:
            return describe(standing, model_names, user) + "; new work is refused until then"
    return None


def describe(standing: QuotaStanding, model_names: Mapping[str, str], user: str) -> str:
    """E.g. "project cms has used 500.0 of its 500 hours of NVIDIA A100 this month (resets
    2027-01-01 00:00 UTC)": used hours cut (never rounded up) to one decimal."""
    used = math.floor(standing.used_hours * 10) / 10
    what = hours_of(standing, model_names)
    if standing.scope == "user" and standing.subject == user:
        who = f"you have used {used:.1f} of your {what}"
    else:
        who = f"{standing.scope} {standing.subject} has used {used:.1f} of its {what}"
    resets = standing.period_end.strftime("%Y-%m-%d %H:%M UTC")
    return f"{who} this {standing.period} (resets {resets})"


def form_notes(
    standings: Iterable[QuotaStanding], model_names: Mapping[str, str], user: str
) -> list[dict[str, Any]]:
    """The spawn form's lines for one accelerator: what is left of each quota, or the figures
    of one used up. `remaining` (hours, cut to one decimal) is for scripts."""
    notes = []
    for standing in standings:
        left = math.floor(standing.remaining_hours * 10) / 10
        if standing.exhausted:
            text = "Quota used up: " + describe(standing, model_names, user)
        else:
            resets = standing.period_end.strftime("%Y-%m-%d %H:%M UTC")
            text = (
                f"Quota: {left:.1f} of {hours_of(standing, model_names)} left this "
                f"{standing.period} (resets {resets})"
            )
        notes.append({"text": text, "exhausted": standing.exhausted, "remaining": left})
    return notes


def hours_of(standing: QuotaStanding, model_names: Mapping[str, str]) -> str:
    """E.g. "500 GPU-hours" (all accelerators) or "500 hours of NVIDIA A100"."""
    if standing.model is None:
        return f"{standing.limit_hours:g} GPU-hours"
    return f"{standing.limit_hours:g} hours of {model_names.get(standing.model, standing.model)}"


async def standings(
    connection: Any,
    quotas: Sequence[Quota],
    user: str,
    projects: Sequence[str],
    now: datetime,
) -> list[QuotaStanding]:
    """What is left of each quota that applies to `user` and to `projects` at `now`: two
    queries (the admins' adjustments, then the usage of every window at once). `connection`
    is a psycopg AsyncConnection; `now` a whole second with a time zone."""
    from . import ledger

    pairs = applicable(quotas, user, projects)
    if not pairs:
        return []
    keys = [adjustment_key(q, s, now) for q, s in pairs]
    adjustments = {
        key: Adjustment(extra, reset)
        for key, (extra, reset) in (await ledger.quota_adjustments(connection, keys)).items()
    }
    windows = []
    for (quota, subject), key in zip(pairs, keys, strict=True):
        since = counted_since(key[4], adjustments.get(key, Adjustment()))
        user_name = subject if quota.scope == "user" else None
        windows.append((user_name, subject if quota.scope == "project" else None, since))
    used = await ledger.window_unit_seconds(connection, windows, now)
    return [
        standing_of(q, s, now, used[i], adjustments.get(keys[i], Adjustment()))
        for i, (q, s) in enumerate(pairs)
    ]
