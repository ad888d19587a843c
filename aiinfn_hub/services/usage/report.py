"""The usage answer: daily rows, totals over the range, quotas; as JSON or CSV. Pure.

Figures are exact: seconds of accelerator units and millicore-seconds of CPU as integers, hours
beside them rounded to the microhour for reading. A CSV cell a spreadsheet would run as a
formula (a user or project name starting with =, +, -, @, a tab or a carriage return) is
prefixed with an apostrophe (OWASP's advice), and every cell is quoted as RFC 4180 says.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol

from .query import UsageQuery
from .store import DailyUse

KEY_FIELDS = ("user", "project", "model", "kind", "site")
CSV_COLUMNS = (
    "day",
    *KEY_FIELDS,
    "accelerator_seconds",
    "accelerator_hours",
    "cpu_millicore_seconds",
    "cpu_hours",
)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class Standing(Protocol):
    """What the report reads of a quota's standing (accounting.quotas.QuotaStanding)."""

    scope: str
    subject: str
    model: str
    period: str
    period_start: datetime
    period_end: datetime
    limit_hours: Any
    used_hours: Any
    remaining_hours: Any


def hours(seconds: int, per_hour: int = 3600) -> float:
    return round(seconds / per_hour, 6)


def figures(unit_seconds: int, cpu_millisecond_seconds: int) -> dict[str, Any]:
    return {
        "accelerator_seconds": unit_seconds,
        "accelerator_hours": hours(unit_seconds),
        "cpu_millicore_seconds": cpu_millisecond_seconds,
        "cpu_hours": hours(cpu_millisecond_seconds, 3_600_000),
    }


def _key(row: DailyUse) -> tuple[str, ...]:
    return (row.user, row.project, row.model, row.kind, row.site)


def totals(rows: Iterable[DailyUse]) -> list[dict[str, Any]]:
    """Use over the whole range per (user, project, model, kind, site), sorted by that key."""
    sums: dict[tuple[str, ...], list[int]] = {}
    for row in rows:
        found = sums.setdefault(_key(row), [0, 0])
        found[0] += row.unit_seconds
        found[1] += row.cpu_millisecond_seconds
    return [
        {**dict(zip(KEY_FIELDS, key, strict=True)), **figures(*sums[key])} for key in sorted(sums)
    ]


def quota_document(standing: Standing) -> dict[str, Any]:
    return {
        "scope": standing.scope,
        "subject": standing.subject,
        "model": standing.model,
        "period": standing.period,
        "period_start": standing.period_start.isoformat(),
        "period_end": standing.period_end.isoformat(),
        "limit_hours": float(standing.limit_hours),
        "used_hours": round(float(standing.used_hours), 6),
        "remaining_hours": round(float(standing.remaining_hours), 6),
    }


def document(
    query: UsageQuery,
    rows: Sequence[DailyUse],
    standings: Sequence[Standing],
    now: datetime,
) -> dict[str, Any]:
    """The API's JSON answer."""
    return {
        "user": query.user,
        "all": query.every_user,
        "project": query.project,
        "start": query.first.isoformat(),
        "end": query.last.isoformat(),
        "days": [day.isoformat() for day in query.days()],
        "time_zone": "UTC",
        "as_of": now.replace(microsecond=0).isoformat(),
        "daily": [
            {
                "day": row.day.isoformat(),
                **dict(zip(KEY_FIELDS, _key(row), strict=True)),
                **figures(row.unit_seconds, row.cpu_millisecond_seconds),
            }
            for row in rows
        ],
        "totals": totals(rows),
        "quotas": [quota_document(standing) for standing in standings],
    }


def safe_cell(value: str) -> str:
    """A text cell a spreadsheet shows as text, never runs as a formula."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def csv_text(rows: Iterable[DailyUse]) -> str:
    """The daily rows as CSV (a header, then one line per row; CRLF line ends)."""
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        numbers = figures(row.unit_seconds, row.cpu_millisecond_seconds)
        writer.writerow(
            [
                row.day.isoformat(),
                *(safe_cell(value) for value in _key(row)),
                *(numbers[name] for name in CSV_COLUMNS[6:]),
            ]
        )
    return out.getvalue()


def csv_filename(query: UsageQuery) -> str:
    """A file name that needs no quoting: the range, and the subject when it is a safe word."""
    subject = "all" if query.every_user else (query.user or "")
    bare = subject.replace("-", "").replace("_", "").replace(".", "")
    if not (bare.isascii() and bare.isalnum()):
        subject = "user"
    return f"usage-{subject}-{query.first}-{query.last}.csv"
