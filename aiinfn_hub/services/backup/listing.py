"""Reading a repository without mounting it in the service: a short Job runs `borg list` as the
user (or, for an admin, as whoever may read that repository) with only that repository mounted,
read-only, and its one passphrase; the service reads the Job's log. Pure.

borg's own messages go to a file and are shown (last 4 KiB) only when borg fails, so a
successful Job's log is borg's JSON alone. Listing a folder asks borg for its direct entries only
(two `--pattern`s: the folder's children included, everything else excluded), so a home of a
million files lists one folder at a time.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from . import borg, paths, records
from .manifests import (
    STATE_VOLUME,
    TARGET_PATH,
    BackupSettings,
    RunAs,
    Step,
    _borg,
    _job,
    _key,
    _metadata,
    _scratch,
    _target_repository,
    job_name,
)
from .repos import Repository, path_under

LIST_COMPONENT = "backup-list"
LIST_DEADLINE_SECONDS = 600
LIST_TTL_SECONDS = 600
# borg's stderr kept aside: a successful Job's log is its JSON output alone.
LIST_SCRIPT = """set -u
"$@" 2>/tmp/borg-messages
code=$?
if [ "$code" -ne 0 ]; then tail -c 4096 /tmp/borg-messages >&2; fi
exit "$code"
"""


def children_command(
    settings: borg.BorgSettings, repository: str, archive: str, folder: str
) -> borg.BorgCommand:
    """`borg list --json-lines` of the entries directly inside `folder` ("" for the top)."""
    folder = paths.relative_path(folder)
    command = borg.list_paths(settings, repository, archive, folder, bypass_lock=True)
    prefix = re.escape(folder + "/") if folder else ""
    patterns = (f"--pattern=+re:^{prefix}[^/]+$", "--pattern=-re:.")
    split = command.argv.index("--")
    return borg.BorgCommand((*command.argv[:split], *patterns, *command.argv[split:]), command.env)


def make_list_job(
    settings: BackupSettings,
    repository: Repository,
    requester: str,
    run_as: RunAs,
    run_id: str,
    archive: str | None = None,
    folder: str = "",
) -> dict[str, Any]:
    """A Job listing the repository's archives (archive None) or one folder of an archive,
    with only that repository mounted, read-only; short deadline and TTL."""
    config = _borg(settings, repository, borg.BASE_DIR)
    location = path_under(TARGET_PATH, repository)
    if archive is None:
        command = borg.list_archives(config, location, bypass_lock=True)
    else:
        command = children_command(config, location, paths.archive_name(archive), folder)
    step = Step("list", ("sh", "-c", LIST_SCRIPT, "list", *command.argv))
    pairs = [
        _target_repository(settings, repository),
        _key(settings, repository),
        _scratch(STATE_VOLUME, borg.BASE_DIR),
    ]
    short = dataclasses.replace(
        settings, deadline_seconds=LIST_DEADLINE_SECONDS, ttl_seconds=LIST_TTL_SECONDS
    )
    name = job_name("list", repository, run_id)
    metadata = _metadata(name, LIST_COMPONENT, repository, requester)
    return _job(short, metadata, run_as, [(step, command)], pairs)


def archives(log: str) -> list[records.Archive]:
    """A successful archives listing's log, newest first, borg's checkpoints left out (a killed
    run is never offered as a backup)."""
    found = [archive for archive in records.archives(log) if not archive.checkpoint]
    return sorted(found, key=lambda archive: archive.time, reverse=True)


def children(log: str, folder: str) -> list[records.Item]:
    """A successful folder listing's log: the folder's direct entries, by path."""
    items = records.items(log.splitlines())
    keep = set(paths.children([item.path for item in items], folder))
    return sorted((item for item in items if item.path in keep), key=lambda item: item.path)
