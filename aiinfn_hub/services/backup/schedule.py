"""The scheduler's decisions: when a repository's backup or check is due, how many Jobs may
start, and what a finished run does to the repository's record. Pure.

The schedule is one time of day in UTC (`HH:MM`): a period starts at that time each day and
every repository is backed up once per period (a failed run is tried again after a delay, a
bounded number of times). Nothing here is kept in memory between ticks: the records (one per
repository, in a ConfigMap the service owns) and the Jobs listed say what has been done, so a
restarted service takes up where it was. A run is a success only when its Job completed;
anything else (a failed step, a killed pod, a Job that vanished) is a failure.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from . import records

DAILY = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
MAX_ERROR = 500
RunKind = Literal["backup", "check"]
RunState = Literal["running", "succeeded", "failed"]


def parse_daily(text: str) -> tuple[int, int]:
    """`HH:MM` (UTC, 24 h) -> (hour, minute); ValueError otherwise."""
    match = DAILY.fullmatch(text)
    if not match:
        raise ValueError(f"a daily time is HH:MM in UTC (00:00 to 23:59), not {text!r}")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class Policy:
    """The schedule and its limits: when, how many Jobs at once, retries, checks."""

    daily_at: str = "02:00"
    concurrency: int = 2
    retries: int = 2
    retry_delay: timedelta = timedelta(hours=1)
    check_every_days: int = 7
    # Run the day begun before the scheduler started (a missed night) instead of waiting for
    # the next scheduled time.
    catch_up: bool = False

    def __post_init__(self) -> None:
        parse_daily(self.daily_at)
        if self.concurrency < 1 or self.retries < 0 or self.check_every_days < 0:
            raise ValueError("concurrency >= 1, retries >= 0, check_every_days >= 0")


def period_start(policy: Policy, now: datetime) -> datetime:
    """The start of the period `now` is in: today's scheduled time if passed, else yesterday's."""
    hour, minute = parse_daily(policy.daily_at)
    now = now.astimezone(UTC)
    start = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return start if start <= now else start - timedelta(days=1)


@dataclass(frozen=True)
class Record:
    """What an admin sees of one repository; times are UTC, sizes bytes. `last_run` is the
    start of the newest run taken into account (backup or check), so no run counts twice."""

    key: str
    kind: str = ""
    name: str = ""
    last_run: datetime | None = None
    last_attempt: datetime | None = None
    attempts: int = 0
    last_success: datetime | None = None
    last_failure: datetime | None = None
    last_error: str = ""
    last_outcome: str = ""
    last_warning: str = ""
    archives: int | None = None
    last_archive_size: int | None = None
    last_archive_added: int | None = None
    original_size: int | None = None
    stored_size: int | None = None
    dedup_ratio: float | None = None
    last_check: datetime | None = None
    last_check_ok: bool | None = None


@dataclass(frozen=True)
class Run:
    """One backup or check Job as the listing shows it."""

    name: str
    key: str
    kind: RunKind
    started: datetime
    state: RunState


@dataclass(frozen=True)
class Report:
    """What a successful backup's Job printed: the new archive (None: its folder was missing,
    nothing backed up), the repository's totals, its archives after prune (checkpoints left
    out), and borg's warnings (it exited 1: the archive lacks what they name)."""

    created: records.ArchiveStats | None
    repository: records.RepositoryStats
    archives: int
    warnings: str = ""


# A record's `last_outcome`: how the last backup ended.
ARCHIVED = "archived"
ARCHIVED_WITH_WARNINGS = "archived with warnings"
SKIPPED = records.SKIPPED
FAILED = "failed"


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value else None


def _time(value: object) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


TIME_FIELDS = ("last_run", "last_attempt", "last_success", "last_failure", "last_check")


def dump(record: Record) -> str:
    document = dataclasses.asdict(record)
    for name in TIME_FIELDS:
        document[name] = _iso(getattr(record, name))
    return json.dumps(document, sort_keys=True)


def load(key: str, text: str) -> Record:
    """A record as dumped; an unreadable one starts afresh (the next run rewrites it)."""
    try:
        document = json.loads(text)
        fields = {f.name for f in dataclasses.fields(Record)}
        document = {k: v for k, v in document.items() if k in fields}
        for name in TIME_FIELDS:
            document[name] = _time(document.get(name))
        document["key"] = key
        record = Record(**document)
    except (ValueError, TypeError, AttributeError):
        return Record(key)
    return record if _well_typed(record) else Record(key)


def _well_typed(record: Record) -> bool:
    counts = (record.archives, record.last_archive_size, record.last_archive_added)
    sizes = (*counts, record.original_size, record.stored_size)
    return (
        _is_int(record.attempts)
        and all(isinstance(text, str) for text in _texts(record))
        and all(n is None or _is_int(n) for n in sizes)
        and (record.dedup_ratio is None or isinstance(record.dedup_ratio, int | float))
        and (record.last_check_ok is None or isinstance(record.last_check_ok, bool))
    )


def _texts(record: Record) -> tuple[object, ...]:
    return (record.kind, record.name, record.last_error, record.last_outcome, record.last_warning)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_new(record: Record, run: Run) -> bool:
    """A finished run not yet taken into the record."""
    return run.state != "running" and (record.last_run is None or run.started > record.last_run)


def finished(
    policy: Policy, record: Record, run: Run, report: Report | None, error: str = ""
) -> Record:
    """The record after a finished run. A backup is a success only when its Job succeeded and
    its report was read; a failed or killed run, or an unreadable report, is a failure. A
    missing folder (nothing backed up) and borg's warnings are successes, said in
    `last_outcome` and `last_warning`. `attempts` counts the failures in the period of the last
    attempt."""
    if run.kind == "check":
        ok = run.state == "succeeded"
        changes: dict[str, Any] = {"last_check": run.started, "last_check_ok": ok}
        if not ok:
            changes.update(last_failure=run.started, last_error=_short(error or "check failed"))
        return dataclasses.replace(record, last_run=run.started, **changes)
    base = dataclasses.replace(record, last_run=run.started, last_attempt=run.started)
    if run.state != "succeeded" or report is None:
        previous = record.last_attempt
        same = previous is not None and previous >= period_start(policy, run.started)
        return dataclasses.replace(
            base,
            attempts=record.attempts + 1 if same else 1,
            last_failure=run.started,
            last_error=_short(error or "the backup failed"),
            last_outcome=FAILED,
        )
    created = report.created
    if created is not None:
        base = dataclasses.replace(
            base,
            last_archive_size=created.original_size,
            last_archive_added=created.deduplicated_size,
        )
    if created is None:
        outcome = SKIPPED
    else:
        outcome = ARCHIVED_WITH_WARNINGS if report.warnings else ARCHIVED
    return dataclasses.replace(
        base,
        attempts=0,
        last_success=run.started,
        last_outcome=outcome,
        last_warning=_short(report.warnings),
        archives=report.archives,
        original_size=report.repository.total_size,
        stored_size=report.repository.unique_compressed_size,
        dedup_ratio=report.repository.dedup_ratio,
    )


def _short(message: str) -> str:
    """At most MAX_ERROR characters: the head (which step, its exit code, borg's first
    message) and the tail (borg's last words), the middle left out."""
    message = message.strip()
    if len(message) <= MAX_ERROR:
        return message
    half = (MAX_ERROR - 5) // 2
    return f"{message[:half]} ... {message[-half:]}"


def needs_lock_check(record: Record) -> bool:
    """Whether the last run failed (then its lock may be left): the lock rule runs first."""
    if record.last_failure is None:
        return False
    return record.last_success is None or record.last_failure > record.last_success


def backup_due(policy: Policy, record: Record, now: datetime) -> bool:
    """Due once per period; a failure is retried after `retry_delay`, `retries` times."""
    start = period_start(policy, now)
    if record.last_attempt is None or record.last_attempt < start:
        return True
    if record.last_success is not None and record.last_success >= record.last_attempt:
        return False
    if record.attempts > policy.retries:
        return False
    return now >= record.last_attempt + policy.retry_delay


def check_due(policy: Policy, record: Record, now: datetime) -> bool:
    """A check every `check_every_days` periods (0: never), once the period's backup is done."""
    if policy.check_every_days == 0 or record.last_success is None:
        return False
    start = period_start(policy, now)
    if record.last_success < start:
        return False
    if record.last_check is None:
        return True
    return record.last_check < start - timedelta(days=policy.check_every_days - 1)


def _apart(record: Record, now: datetime) -> bool:
    """Not in the same second as the last run: Job times have whole seconds, and a run that
    started then would look already taken in (`is_new`)."""
    return record.last_run is None or now.replace(microsecond=0) > record.last_run


def period_open(
    policy: Policy, known: Mapping[str, Record], now: datetime, since: datetime
) -> bool:
    """Whether this period's backups may run: it began after the scheduler started (`since`),
    or a backup of it is already recorded (a restarted service carries the night on), or the
    policy catches up. A service started in the day never backs everything up at once."""
    start = period_start(policy, now)
    if policy.catch_up or start >= since:
        return True
    return any(r.last_attempt is not None and r.last_attempt >= start for r in known.values())


@dataclass(frozen=True)
class Start:
    key: str
    kind: RunKind


def to_start(
    policy: Policy,
    keys: Sequence[str],
    known: Mapping[str, Record],
    runs: Iterable[Run],
    now: datetime,
    since: datetime,
) -> list[Start]:
    """What to start now: backups first (in `keys` order), then checks, never a second Job for
    a repository that has one running, never more than `concurrency` running at once; nothing
    in a period that began before the scheduler started (`period_open`)."""
    if not period_open(policy, known, now, since):
        return []
    running = [run for run in runs if run.state == "running"]
    busy = {run.key for run in running}
    free = policy.concurrency - len(running)
    starts: list[Start] = []
    plan: tuple[tuple[RunKind, Callable[[Policy, Record, datetime], bool]], ...] = (
        ("backup", backup_due),
        ("check", check_due),
    )
    for kind, due in plan:
        for key in keys:
            if len(starts) >= free:
                return starts
            record = known.get(key) or Record(key)
            if key not in busy and _apart(record, now) and due(policy, record, now):
                starts.append(Start(key, kind))
                busy.add(key)
    return starts
