"""borg 1.2 command lines: argv and environment, never a shell string. Pure.

The passphrase reaches borg only through BORG_PASSCOMMAND, which reads the file the keys Secret
is mounted as: it is never in argv (visible in /proc and in borg's own `command_line` records),
never an environment value, never in a log. Repositories use authenticated encryption
(`repokey-blake2`); borg refuses a repository that turns out unencrypted or moved.

`create` stores symlinks as symlinks and never follows them (borg's default, kept: no
`--dereference`), stays on one file system and skips folders tagged as caches (CACHEDIR.TAG) and
the usual cache folders. Positional arguments follow `--`, so no name is read as an option.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from . import paths

ENCRYPTION = "repokey-blake2"
PASSPHRASE_FILE = "/aiinfn/backup-key/passphrase"
BASE_DIR = "/aiinfn/borg"
USER = "aiinfn-backup"
DEFAULT_EXCLUDES = ("sh:**/.cache", "sh:**/__pycache__")
# borg's pattern styles (`borg help patterns`): an exclude must name one, so its meaning never
# depends on borg's default style.
EXCLUDE_STYLES = ("fm:", "sh:", "re:", "pp:", "pf:")
MAX_EXCLUDES = 64
MAX_EXCLUDE_LENGTH = 256
# borg's answers to its own questions: refuse, never prompt (a Job has no terminal).
_REFUSALS = {
    "BORG_RELOCATED_REPO_ACCESS_IS_OK": "no",
    "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "no",
    "BORG_CHECK_I_KNOW_WHAT_I_AM_DOING": "NO",
    "BORG_DELETE_I_KNOW_WHAT_I_AM_DOING": "NO",
}


@dataclass(frozen=True)
class Retention:
    """How many archives `prune` keeps: the last of each day, week and month."""

    daily: int = 7
    weekly: int = 4
    monthly: int = 6

    def __post_init__(self) -> None:
        counts = (self.daily, self.weekly, self.monthly)
        if any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in counts):
            raise ValueError("retention counts are whole numbers >= 0")
        if not any(counts):
            raise ValueError("retention keeps nothing: prune would delete every archive")


def exclude_problem(pattern: str) -> str | None:
    """Why `pattern` cannot be one of `borg create`'s excludes, or None if it can."""
    if not pattern.startswith(EXCLUDE_STYLES):
        return f"must start with its style, one of {', '.join(EXCLUDE_STYLES)}"
    if len(pattern) > MAX_EXCLUDE_LENGTH:
        return f"is longer than {MAX_EXCLUDE_LENGTH} characters"
    if len(pattern) == 3 or any(ord(c) < 32 for c in pattern):
        return "is empty after its style, or holds a control character"
    if pattern.startswith("re:"):
        try:
            re.compile(pattern[3:])
        except re.error as error:
            return f"is not a regular expression: {error}"
    return None


@dataclass(frozen=True)
class BorgSettings:
    """What every borg command shares. `host_id` names the lock holder (the Job's pod);
    `umask` 0027 lets a project's members read its repository through the project gid."""

    executable: str = "borg"
    passphrase_file: str = PASSPHRASE_FILE
    base_dir: str = BASE_DIR
    host_id: str | None = None
    compression: str = "zstd,3"
    excludes: tuple[str, ...] = DEFAULT_EXCLUDES
    retention: Retention = field(default_factory=Retention)
    lock_wait: int = 1
    umask: str = "0077"


@dataclass(frozen=True)
class BorgCommand:
    """One borg run: its argv and the environment to add to a minimal one."""

    argv: tuple[str, ...]
    env: dict[str, str]


def environment(settings: BorgSettings) -> dict[str, str]:
    """BORG_PASSCOMMAND (a command reading the Secret's file, not the passphrase), borg's
    state folder, the lock holder's id, UTC times, a user name, refusals instead of prompts."""
    env = {
        "BORG_PASSCOMMAND": f"cat {shlex.quote(settings.passphrase_file)}",
        "BORG_BASE_DIR": settings.base_dir,
        "TZ": "UTC",
        # borg create records a user name (getpass): a Job's uid has no /etc/passwd entry.
        "USER": USER,
        **_REFUSALS,
    }
    if settings.host_id:
        env["BORG_HOST_ID"] = settings.host_id
    return env


def _command(
    settings: BorgSettings, action: str, options: Sequence[str], positional: Sequence[str]
) -> BorgCommand:
    common = ["--lock-wait", str(settings.lock_wait), "--umask", settings.umask]
    argv = (settings.executable, action, *common, *options, "--", *positional)
    return BorgCommand(argv, environment(settings))


def _location(repository: str, archive: str | None = None) -> str:
    if not repository.startswith("/"):
        raise ValueError(f"a repository is an absolute path, not {repository!r}")
    return repository if archive is None else f"{repository}::{paths.archive_name(archive)}"


def init(settings: BorgSettings, repository: str) -> BorgCommand:
    """A new repository with authenticated encryption, its key kept in it (sealed by the
    passphrase)."""
    return _command(settings, "init", [f"--encryption={ENCRYPTION}"], [_location(repository)])


def create(
    settings: BorgSettings, repository: str, archive: str, sources: Sequence[str]
) -> BorgCommand:
    """An archive of `sources` (relative to the working folder, normally `.`), with JSON stats."""
    options = [
        "--json",
        "--compression",
        settings.compression,
        "--one-file-system",
        "--numeric-ids",
        "--exclude-caches",
    ]
    for pattern in settings.excludes:
        options += ["--exclude", pattern]
    return _command(settings, "create", options, [_location(repository, archive), *sources])


def prune(settings: BorgSettings, repository: str) -> BorgCommand:
    """Applies the retention; `--list` names each archive kept or removed (the backup Job
    compacts only after a removal)."""
    keep = settings.retention
    options = [
        "--list",
        f"--keep-daily={keep.daily}",
        f"--keep-weekly={keep.weekly}",
        f"--keep-monthly={keep.monthly}",
    ]
    return _command(settings, "prune", options, [_location(repository)])


def compact(settings: BorgSettings, repository: str) -> BorgCommand:
    """Frees the space `prune` released (borg 1.2 no longer does it on every write)."""
    return _command(settings, "compact", [], [_location(repository)])


def check(settings: BorgSettings, repository: str, verify_data: bool = False) -> BorgCommand:
    options = ["--verify-data"] if verify_data else []
    return _command(settings, "check", options, [_location(repository)])


def break_lock(settings: BorgSettings, repository: str) -> BorgCommand:
    """Only after `locks.may_break` said the holder is gone."""
    return _command(settings, "break-lock", [], [_location(repository)])


def _reading(bypass_lock: bool) -> list[str]:
    # A restore mounts the repository read-only: it cannot take borg's lock there.
    return ["--bypass-lock"] if bypass_lock else []


def list_archives(
    settings: BorgSettings, repository: str, bypass_lock: bool = False
) -> BorgCommand:
    return _command(settings, "list", [*_reading(bypass_lock), "--json"], [_location(repository)])


def list_paths(
    settings: BorgSettings,
    repository: str,
    archive: str,
    path: str = "",
    bypass_lock: bool = False,
) -> BorgCommand:
    """One JSON line per item in the archive, under `path` if given."""
    inner = [paths.relative_path(path)] if path else []
    location = _location(repository, archive)
    return _command(settings, "list", [*_reading(bypass_lock), "--json-lines"], [location, *inner])


def info(
    settings: BorgSettings, repository: str, archive: str | None = None, bypass_lock: bool = False
) -> BorgCommand:
    location = _location(repository, archive)
    return _command(settings, "info", [*_reading(bypass_lock), "--json"], [location])


def info_archives(
    settings: BorgSettings, repository: str, bypass_lock: bool = False
) -> BorgCommand:
    """Every archive's sizes in one call: original, compressed, and deduplicated (what only that
    archive holds), with its name and times (`records.archives_info`)."""
    options = [*_reading(bypass_lock), "--json", "--glob-archives", "*"]
    return _command(settings, "info", options, [_location(repository)])


def extract(
    settings: BorgSettings, repository: str, archive: str, path: str, bypass_lock: bool = True
) -> BorgCommand:
    """Extract `path` (the whole archive if "") into the working folder; symlinks come back as
    symlinks, modes as they were."""
    inner = [paths.relative_path(path)] if path else []
    location = _location(repository, archive)
    options = [*_reading(bypass_lock), "--numeric-ids"]
    return _command(settings, "extract", options, [location, *inner])


def archive_for(when: datetime) -> str:
    """Our archive name for a run started at `when`: its UTC time, `2026-12-05T020000Z`."""
    if when.tzinfo is None:
        raise ValueError("an archive's time must carry its zone")
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H%M%SZ")
