"""Restore paths, checked before anything runs: archive names, paths inside an archive, and where
a restore may write. Pure.

A user's restore always lands in `~/restored/<archive>/<path>` in their own home; an admin picks
the folder, inside a home or project folder the restore Job mounts. Paths are relative, without
`..`, `.` or empty parts, NUL or control characters, and every prefix test compares whole parts
(`home/alice2` is not under `home/alice`). Nothing is ever overwritten: a destination that
exists is refused with a message saying so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...errors import UserError

MAX_ARCHIVE_NAME = 128
MAX_PATH_LENGTH = 4096
MAX_PART_LENGTH = 255
RESTORED_FOLDER = "restored"
# Our archive names are timestamps (`2026-12-05T020000Z`); borg's own checkpoints add
# `.checkpoint` or `.checkpoint.N`. Nothing that could be an option, a path or borg's `::`.
_ARCHIVE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


class RestoreRefused(UserError):
    """A restore we refuse; the message tells the user why (and never names another's data)."""

    def __init__(self, message: str, *, reason: str = "invalid-restore", status: int = 400):
        super().__init__(message, reason=reason, status=status)


def archive_name(raw: object) -> str:
    """The archive name exactly as sent, if it is one borg could have made for us."""
    if not isinstance(raw, str) or not raw:
        raise RestoreRefused("the archive name must be a non-empty string")
    if len(raw) > MAX_ARCHIVE_NAME:
        raise RestoreRefused(f"the archive name is longer than {MAX_ARCHIVE_NAME} characters")
    if not _ARCHIVE.fullmatch(raw):
        raise RestoreRefused(
            "an archive name is ASCII letters, digits and . _ + -, starting with a letter or digit"
        )
    return raw


def relative_path(raw: object, what: str = "path") -> str:
    """A path inside an archive (or a folder inside a volume): relative, normal, no NUL, no
    control characters, no `.`/`..`/empty parts; a trailing '/' is dropped. "" is the root."""
    if not isinstance(raw, str):
        raise RestoreRefused(f"the {what} must be a string")
    if len(raw) > MAX_PATH_LENGTH:
        raise RestoreRefused(f"the {what} is longer than {MAX_PATH_LENGTH} characters")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in raw):
        raise RestoreRefused(f"the {what} contains a NUL or control character")
    if raw.startswith("/"):
        raise RestoreRefused(f"the {what} must be relative (no leading '/')")
    text = raw[:-1] if raw.endswith("/") else raw
    if not text:
        return ""
    for part in text.split("/"):
        if part in ("", ".", ".."):
            raise RestoreRefused(f"the {what} must not contain empty, '.' or '..' parts")
        if len(part.encode()) > MAX_PART_LENGTH:
            raise RestoreRefused(f"a part of the {what} is longer than {MAX_PART_LENGTH} bytes")
    return text


def is_within(path: str, prefix: str) -> bool:
    """Whether `path` is `prefix` or below it, comparing whole parts: `/home/alice2` and
    `/home/alice-old` are not under `/home/alice`. Both normal (no `..`, no doubled '/')."""
    if not prefix:
        return not path.startswith("/")
    base = prefix.rstrip("/")
    if not base:
        return path.startswith("/")
    return path == base or path.startswith(base + "/")


def children(paths: list[str], folder: str) -> list[str]:
    """The entries of an archive listing directly inside `folder` ("" for the top)."""
    depth = 0 if not folder else folder.count("/") + 1
    return [
        path
        for path in paths
        if path not in ("", ".", folder)
        and (not folder or is_within(path, folder))
        and path.count("/") == depth
    ]


@dataclass(frozen=True)
class RestoreTarget:
    """Where a restore writes, relative to the volume the restore Job mounts read-write: the
    folder borg runs in, and the path that must not exist yet (`folder/path`)."""

    archive: str
    path: str
    folder: str

    @property
    def destination(self) -> str:
        return f"{self.folder}/{self.path}" if self.path else self.folder


def user_target(archive: object, path: object) -> RestoreTarget:
    """A user's restore: `restored/<archive>/<path>` in their own home, nothing else."""
    name = archive_name(archive)
    inner = relative_path(path)
    return RestoreTarget(name, inner, f"{RESTORED_FOLDER}/{name}")


def admin_target(archive: object, path: object, folder: object) -> RestoreTarget:
    """An admin's restore into a folder they choose, relative to the home or project folder the
    Job mounts, checked like any path (no way out of that volume)."""
    name = archive_name(archive)
    inner = relative_path(path)
    chosen = relative_path(folder, "destination folder")
    if not chosen:
        raise RestoreRefused("choose a folder to restore into, not the volume's top")
    return RestoreTarget(name, inner, chosen)


def absolute_in(roots: tuple[str, ...], path: str) -> tuple[str, str]:
    """(root, relative path) for an absolute path under one of `roots`, compared by whole
    parts; refused when it is under none of them or not normal."""
    if not path.startswith("/"):
        raise RestoreRefused("the destination must be an absolute path")
    relative = relative_path(path.lstrip("/"), "destination")
    for root in sorted(roots, key=len, reverse=True):
        if is_within("/" + relative, root):
            return root, ("/" + relative)[len(root.rstrip("/")) + 1 :]
    raise RestoreRefused("the destination is not inside a home or project folder you may use")


def refuse_existing(target: RestoreTarget, exists: bool) -> None:
    """Never overwrite: a restore whose destination exists is refused before anything runs."""
    if exists:
        raise RestoreRefused(
            f"{target.destination} already exists; nothing was restored. Move or rename it, "
            "or restore to another folder",
            reason="destination-exists",
            status=409,
        )
