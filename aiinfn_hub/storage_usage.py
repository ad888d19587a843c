"""Bytes and files in each home and project folder, counted by a walk with a budget.

The storage exporter (storage_exporter.py, docs/monitoring.md) walks one folder at a time with
`walk` and publishes a folder's numbers only once its walk is complete, so a scrape never walks
anything. The walk lists directories with `os.scandir` and `lstat`s each entry once, like
`du`: symbolic links are counted as entries and never followed, a file with several hard links
in one folder is counted once (by device and inode), other mounted file systems are not entered,
and a directory that cannot be listed is counted as an error and skipped. `Budget` paces it to
a number of entries a second, so a pass over a million files costs the server a known load.
"""

from __future__ import annotations

import os
import stat
import string
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import escapism

# names.slug's escaping, repeated here so that the exporter, which runs on the storage server,
# does not import names (whose errors module imports JupyterHub); a unit test keeps them equal.
_SLUG_SAFE = frozenset(string.ascii_lowercase + string.digits)
_SLUG_ESCAPE = "-"


class WalkStopped(Exception):
    """The walk was asked to stop (the exporter is shutting down)."""


@dataclass
class Usage:
    """What one walk of a folder found."""

    bytes: int = 0  # apparent size of regular files (st_size), each inode once
    allocated_bytes: int = 0  # space on disk (st_blocks * 512) of every non-directory entry
    files: int = 0  # non-directory entries (files, symbolic links, others), each inode once
    directories: int = 0  # below the folder, the folder itself not counted
    errors: int = 0  # directories that could not be listed, entries that could not be stat'ed


@dataclass(frozen=True)
class Folder:
    kind: str  # "home" or "project"
    name: str  # the user's or the project's name (its folder is names.slug of it)
    path: Path


class Budget:
    """At most `rate` entries a second (0: no limit), checked every `slice_` entries.

    `wait(seconds)` sleeps and returns True when the walk must stop (threading.Event.wait)."""

    def __init__(
        self,
        rate: float,
        wait: Callable[[float], bool],
        clock: Callable[[], float] = time.monotonic,
        slice_: int = 256,
    ) -> None:
        self.rate = rate
        self.wait = wait
        self.clock = clock
        self.slice = slice_
        self.spent = 0
        self.total = 0  # entries over the budget's life
        self.start = clock()

    def restart(self) -> None:
        """Forget what was spent (time spent idle between walks earns no burst)."""
        self.spent = 0
        self.start = self.clock()

    def spend(self) -> None:
        """Count one entry; every slice, sleep for as long as the rate asks (or stop)."""
        self.spent += 1
        self.total += 1
        if self.spent % self.slice:
            return
        ahead = self.spent / self.rate - (self.clock() - self.start) if self.rate else 0.0
        if self.wait(max(ahead, 0.0)):
            raise WalkStopped


def folder_name(slug: str) -> str | None:
    """The name whose names.slug is this folder name; None for a folder the hub did not name
    (lost+found, a marker, a hidden folder, one an admin made)."""
    try:
        name = escapism.unescape(slug, escape_char=_SLUG_ESCAPE)
    except ValueError:
        return None
    again = escapism.escape(name, safe=_SLUG_SAFE, escape_char=_SLUG_ESCAPE).lower()
    return name if name and again == slug else None


def folders(roots: Mapping[str, Path]) -> list[Folder]:
    """The folders under each kind's root (`home`, `project`), sorted; entries that are not
    directories (the .aiinfn-uid-* markers are symbolic links) or not named by us are skipped."""
    found = []
    for kind, root in roots.items():
        with os.scandir(root) as entries:
            for entry in entries:
                name = folder_name(entry.name)
                if name is not None and entry.is_dir(follow_symlinks=False):
                    found.append(Folder(kind, name, root / entry.name))
    return sorted(found, key=lambda f: (f.kind, f.name))


def walk(folder: Path, budget: Budget) -> Usage:
    """Count what is below `folder` on its file system, spending the budget per entry."""
    usage = Usage()
    device = os.lstat(folder).st_dev
    seen: set[tuple[int, int]] = set()  # inodes with several links, counted already
    pending = [os.fsencode(folder)]
    while pending:
        try:
            for entry in _entries(pending.pop()):
                budget.spend()
                below = _count(entry, device, usage, seen)
                if below is not None:
                    pending.append(below)
        except OSError:
            usage.errors += 1  # could not be listed (permissions), or vanished meanwhile
    return usage


def _entries(directory: bytes) -> Iterator[os.DirEntry[bytes]]:
    with os.scandir(directory) as entries:
        yield from entries


def _count(
    entry: os.DirEntry[bytes], device: int, usage: Usage, seen: set[tuple[int, int]]
) -> bytes | None:
    """Add one entry to `usage`; returns the directory to list next, if it is one."""
    try:
        info = entry.stat(follow_symlinks=False)
    except FileNotFoundError:
        return None  # removed since it was listed
    except OSError:
        usage.errors += 1
        return None
    if stat.S_ISDIR(info.st_mode):
        if info.st_dev != device:
            return None  # another file system mounted here
        usage.directories += 1
        return entry.path
    if info.st_nlink > 1:
        inode = (info.st_dev, info.st_ino)
        if inode in seen:
            return None
        seen.add(inode)
    usage.files += 1
    usage.allocated_bytes += info.st_blocks * 512
    if stat.S_ISREG(info.st_mode):
        usage.bytes += info.st_size
    return None
