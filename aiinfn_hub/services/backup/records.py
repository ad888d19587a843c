"""borg's JSON output -> typed records. Pure.

borg writes times without a zone, in the zone of the process that ran it; every command we build
runs with TZ=UTC, so they are read as UTC. Archives borg left from an interrupted `create`
(`<name>.checkpoint`, `<name>.checkpoint.N`) are marked: a killed run is never a success.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

_CHECKPOINT = re.compile(r".*\.checkpoint(\.[0-9]+)?")
# What a backup's create step prints (its whole log) when the folder is not there: nothing is
# backed up, no archive made, and the run succeeds.
SKIPPED = "nothing to back up: folder missing"
# The line between borg create's JSON and borg's messages when it exited 1 (a warning: the
# archive is complete, less what borg names, such as a file it could not read).
WARNINGS_MARK = "-- borg warnings --"
# The line before each step's output in a container running several (a backup's report step).
STEP_MARK = "-- aiinfn step: "


class BorgOutputError(ValueError):
    """borg's output is not what borg 1.2 writes: log detail, never shown to a user as is."""


@dataclass(frozen=True)
class Archive:
    """One archive as `borg list --json` shows it."""

    name: str
    time: datetime
    checkpoint: bool


@dataclass(frozen=True)
class ArchiveStats:
    """One archive's sizes (`borg create --json`, `borg info --json ::archive`): original,
    compressed, and what only this archive added to the repository."""

    name: str
    start: datetime
    end: datetime
    files: int
    original_size: int
    compressed_size: int
    deduplicated_size: int

    @property
    def dedup_ratio(self) -> float | None:
        """Original bytes per byte this archive added; None when it added nothing."""
        return self.original_size / self.deduplicated_size if self.deduplicated_size else None

    @property
    def checkpoint(self) -> bool:
        """Left by an interrupted `create`: never offered as a backup."""
        return bool(_CHECKPOINT.fullmatch(self.name))


@dataclass(frozen=True)
class RepositoryStats:
    """A repository's totals (`borg info --json`): all archives' original bytes, and the bytes
    it stores once deduplicated and compressed."""

    location: str
    encryption: str
    last_modified: datetime
    total_size: int
    unique_size: int
    unique_compressed_size: int

    @property
    def dedup_ratio(self) -> float | None:
        """Original bytes of every archive per byte stored; None for an empty repository."""
        stored = self.unique_compressed_size
        return self.total_size / stored if stored else None


@dataclass(frozen=True)
class Item:
    """One entry of an archive (`borg list --json-lines`): type is borg's `-`, `d`, `l`, ..."""

    path: str
    type: str
    mode: str
    size: int
    mtime: datetime
    link_target: str


def _time(raw: object) -> datetime:
    if not isinstance(raw, str):
        raise BorgOutputError(f"a time is not a string: {raw!r}")
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise BorgOutputError(f"not an ISO time: {raw!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _field(document: Mapping[str, Any], key: str, kind: type) -> Any:
    value = document.get(key) if isinstance(document, Mapping) else None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BorgOutputError(f"{key!r} is missing or not a {kind.__name__}")
    return value


def _document(text: str) -> Mapping[str, Any]:
    try:
        document = json.loads(text)
    except ValueError:
        raise BorgOutputError("borg's output is not JSON") from None
    if not isinstance(document, dict):
        raise BorgOutputError("borg's output is not a JSON object")
    return document


def step_outputs(text: str) -> dict[str, str]:
    """A log of several steps (`STEP_MARK` lines) cut into each step's output, by name."""
    outputs: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines(keepends=True):
        if line.startswith(STEP_MARK):
            current = outputs.setdefault(line[len(STEP_MARK) :].strip(), [])
        elif current is not None:
            current.append(line)
    return {name: "".join(lines) for name, lines in outputs.items()}


def archives(text: str) -> list[Archive]:
    """`borg list --json REPO`, oldest first as borg lists them."""
    found = []
    for entry in _field(_document(text), "archives", list):
        name = _field(entry, "name", str)
        found.append(Archive(name, _time(entry.get("time")), bool(_CHECKPOINT.fullmatch(name))))
    return found


def _archive_stats(entry: Mapping[str, Any]) -> ArchiveStats:
    stats = _field(entry, "stats", dict)
    return ArchiveStats(
        name=_field(entry, "name", str),
        start=_time(entry.get("start")),
        end=_time(entry.get("end")),
        files=_field(stats, "nfiles", int),
        original_size=_field(stats, "original_size", int),
        compressed_size=_field(stats, "compressed_size", int),
        deduplicated_size=_field(stats, "deduplicated_size", int),
    )


def created(text: str) -> ArchiveStats:
    """`borg create --json`: the new archive's stats."""
    return _archive_stats(_field(_document(text), "archive", dict))


@dataclass(frozen=True)
class CreateResult:
    """A backup's create step: the new archive's stats and the repository's totals with it, or
    None for both when the folder was missing (`skipped` says so); borg's messages when it
    exited 1 (`warnings`)."""

    archive: ArchiveStats | None
    repository: RepositoryStats | None = None
    skipped: str = ""
    warnings: str = ""


def create_result(text: str) -> CreateResult:
    """The create step's log: borg create's JSON, then its warnings after WARNINGS_MARK; or
    the skip record `{"skipped": SKIPPED}`."""
    document, _, warnings = text.partition(f"\n{WARNINGS_MARK}\n")
    if text.startswith(f"{WARNINGS_MARK}\n"):
        raise BorgOutputError("borg warned but printed no archive")
    parsed = _document(document)
    if parsed.get("skipped") == SKIPPED:
        return CreateResult(None, skipped=SKIPPED)
    archive = _archive_stats(_field(parsed, "archive", dict))
    return CreateResult(archive, _repository_stats(parsed), warnings=warnings.strip())


def archives_info(text: str) -> list[ArchiveStats]:
    """`borg info --json --glob-archives '*' REPO`: every archive's stats, oldest first."""
    return [_archive_stats(entry) for entry in _field(_document(text), "archives", list)]


def archive_info(text: str) -> ArchiveStats:
    """`borg info --json REPO::ARCHIVE`: that one archive's stats."""
    entries = _field(_document(text), "archives", list)
    if len(entries) != 1:
        raise BorgOutputError(f"expected one archive, got {len(entries)}")
    return _archive_stats(entries[0])


def repository_info(text: str) -> RepositoryStats:
    """`borg info --json REPO`: the totals of its cache, which borg keeps in step with it."""
    return _repository_stats(_document(text))


def _repository_stats(document: Mapping[str, Any]) -> RepositoryStats:
    """The totals in borg info's or borg create's JSON (both print the cache's stats)."""
    repository = _field(document, "repository", dict)
    stats = _field(_field(document, "cache", dict), "stats", dict)
    return RepositoryStats(
        location=_field(repository, "location", str),
        encryption=_field(_field(document, "encryption", dict), "mode", str),
        last_modified=_time(repository.get("last_modified")),
        total_size=_field(stats, "total_size", int),
        unique_size=_field(stats, "unique_size", int),
        unique_compressed_size=_field(stats, "unique_csize", int),
    )


def items(lines: Iterable[str]) -> list[Item]:
    """`borg list --json-lines REPO::ARCHIVE`, one item per non-empty line."""
    found = []
    for line in lines:
        if not line.strip():
            continue
        entry = _document(line)
        found.append(
            Item(
                path=_field(entry, "path", str),
                type=_field(entry, "type", str),
                mode=_field(entry, "mode", str),
                size=_field(entry, "size", int),
                mtime=_time(entry.get("mtime")),
                link_target=str(entry.get("linktarget") or ""),
            )
        )
    return found


Outcome = Literal["success", "warning", "error", "killed", "unknown"]


def outcome(exit_code: int | None) -> Outcome:
    """A borg step's result from its container's exit code: borg 1.2 exits 0 (success), 1 (a
    warning, such as a file it could not read: the archive lacks it) or 2 (an error); 128+N
    is a signal (137: SIGKILL, OOM included). The create step turns borg's 1 into 0 and prints
    the warnings (`create_result`); any other non-zero code is a failed run."""
    if exit_code is None:
        return "unknown"
    if exit_code == 0:
        return "success"
    if exit_code == 1:
        return "warning"
    if exit_code == 2:
        return "error"
    return "killed" if exit_code > 128 else "unknown"
