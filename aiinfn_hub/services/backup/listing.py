"""Reading a repository without mounting it in the service: a short Job
(`manifests.make_list_job`) runs `borg info` (the archives and their sizes, one call) or
`borg list` (a folder of an archive) as the user (or, for an admin, as whoever may read
that repository) with only that repository mounted, read-only, and its one passphrase; the
service reads the Job's log. This module is what the Job asks borg and what its log holds. Pure.

Listing a folder asks borg for its direct entries only (two `--pattern`s: the folder's children
included, everything else excluded), so a home of a million files lists one folder at a time.
"""

from __future__ import annotations

import re

from . import borg, paths, records


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


def archives(log: str) -> list[records.Archive]:
    """A successful archives listing's log, newest first, borg's checkpoints left out (a killed
    run is never offered as a backup)."""
    found = [archive for archive in records.archives(log) if not archive.checkpoint]
    return sorted(found, key=lambda archive: archive.time, reverse=True)


def archives_with_sizes(log: str) -> list[records.ArchiveStats]:
    """An archives listing Job's log (`borg info`), newest first, checkpoints left out."""
    found = [archive for archive in records.archives_info(log) if not archive.checkpoint]
    return sorted(found, key=lambda archive: archive.start, reverse=True)


def children(log: str, folder: str) -> list[records.Item]:
    """A successful folder listing's log: the folder's direct entries, by path."""
    items = records.items(log.splitlines())
    keep = set(paths.children([item.path for item in items], folder))
    return sorted((item for item in items if item.path in keep), key=lambda item: item.path)
