"""What a usage request asks for, read and checked at the boundary, and who may ask it. Pure.

A request names a range of whole UTC days (`start`, `end`, both included), optionally a user,
every user (`all`), a project and a format. Every parameter is checked before anything reaches
the database: an unknown or repeated one, a date that is not YYYY-MM-DD, a range past the limit,
a name too long or not printable ASCII are 400s with the reason; another user's usage is a 403
for anyone but an admin.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from ...errors import UserError
from ..base import HubUser

PARAMETERS = ("start", "end", "user", "all", "project", "format")
FORMATS = ("json", "csv")
DEFAULT_DAYS = 30
EARLIEST = date(2000, 1, 1)
LATEST = date(2999, 12, 31)
NAME_LIMIT = 64  # usernames in the ledger (events.py)
PROJECT_LIMIT = 63  # catalog keys and label values
TRUE, FALSE = ("1", "true", "yes"), ("0", "false", "no", "")


class Invalid(UserError):
    def __init__(self, message: str) -> None:
        super().__init__(message, reason="invalid", status=400)


class Forbidden(UserError):
    def __init__(self, message: str) -> None:
        super().__init__(message, reason="forbidden", status=403)


@dataclass(frozen=True)
class UsageQuery:
    """Days `first`..`last` (UTC, both included); `user` None with `every_user`: everyone's."""

    first: date
    last: date
    user: str | None
    project: str | None
    every_user: bool = False
    format: str = "json"

    @property
    def since(self) -> datetime:
        return datetime.combine(self.first, datetime.min.time(), UTC)

    @property
    def until(self) -> datetime:
        return datetime.combine(self.last + timedelta(days=1), datetime.min.time(), UTC)

    def days(self) -> list[date]:
        return [self.first + timedelta(days=n) for n in range((self.last - self.first).days + 1)]


def _one(arguments: Mapping[str, Sequence[bytes]], name: str) -> str | None:
    values = arguments.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise Invalid(f"give {name!r} at most once")
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid(f"{name!r} is not UTF-8 text") from None


def _day(text: str | None, name: str) -> date | None:
    if text is None or text == "":
        return None
    try:
        if len(text) != 10:
            raise ValueError
        day = date.fromisoformat(text)
    except ValueError:
        raise Invalid(f"{name!r} must be a date, YYYY-MM-DD (UTC)") from None
    if not EARLIEST <= day <= LATEST:
        raise Invalid(f"{name!r} must be between {EARLIEST} and {LATEST}")
    return day


def _name(text: str | None, name: str, limit: int) -> str | None:
    if text is None or text == "":
        return None
    if len(text) > limit or not (text.isascii() and text.isprintable()):
        raise Invalid(f"{name!r} must be 1 to {limit} printable ASCII characters")
    return text


def _flag(text: str | None, name: str) -> bool:
    if text is None or text.lower() in FALSE:
        return False
    if text.lower() in TRUE:
        return True
    raise Invalid(f"{name!r} must be 1 or 0")


def parse(
    arguments: Mapping[str, Sequence[bytes]], today: date, max_days: int, format: str = "json"
) -> UsageQuery:
    """The request's query (tornado's `request.query_arguments`), checked; 400 on anything
    unknown, repeated or out of bounds. Default range: the last DEFAULT_DAYS days to today."""
    unknown = sorted(set(arguments) - set(PARAMETERS))
    if unknown:
        shown = ", ".join(repr(name[:32]) for name in unknown[:5])
        raise Invalid(f"unknown parameter {shown}; the parameters are {', '.join(PARAMETERS)}")
    last = _day(_one(arguments, "end"), "end") or today
    first = _day(_one(arguments, "start"), "start") or max(
        EARLIEST, last - timedelta(days=min(DEFAULT_DAYS, max_days) - 1)
    )
    if first > last:
        raise Invalid("'start' must not be after 'end'")
    if (last - first).days + 1 > max_days:
        raise Invalid(f"a range of at most {max_days} days, please (start to end, both included)")
    chosen = _one(arguments, "format") or format
    if chosen not in FORMATS:
        raise Invalid("'format' must be json or csv")
    every_user = _flag(_one(arguments, "all"), "all")
    user = _name(_one(arguments, "user"), "user", NAME_LIMIT)
    if every_user and user is not None:
        raise Invalid("give either 'user' or 'all', not both")
    project = _name(_one(arguments, "project"), "project", PROJECT_LIMIT)
    return UsageQuery(first, last, user, project, every_user, chosen)


def is_admin(caller: HubUser, admin_groups: Collection[str]) -> bool:
    """Hub admins, and members of the groups c.AiInfnUsage.admin_groups names."""
    return caller.admin or bool(caller.groups & set(admin_groups))


def authorise(query: UsageQuery, caller: HubUser, admin: bool) -> UsageQuery:
    """The query with its user decided: the caller's own unless an admin asks for another user or
    everyone; a user asking for someone else's usage is refused (403)."""
    if query.every_user or (query.user is not None and query.user != caller.name):
        if not admin:
            raise Forbidden("you may see your own usage only; admins see everyone's")
        return query
    return UsageQuery(query.first, query.last, caller.name, query.project, False, query.format)
