"""Which borg repository holds which data: one per user home, one per project folder.

A restore then only ever mounts the repository of the data it restores, so it can never show or
write another person's or project's files; each repository has its own passphrase (one item of
the keys Secret), and prune, compact and check run per repository. Folder names come from the
injective `names.slug` of a name validated first, so two users never share a repository.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from ... import names

Kind = Literal["home", "project"]
# Folders under the backup target, one per kind, each holding one repository per owner.
KIND_FOLDERS: dict[Kind, str] = {"home": "homes", "project": "projects"}
MAX_SECRET_KEY = 253


@dataclass(frozen=True)
class Repository:
    """One borg repository: whose data (a username or a project name, validated) and where."""

    kind: Kind
    name: str

    @property
    def slug(self) -> str:
        return names.slug(self.name)

    @property
    def folder(self) -> str:
        """The kind's folder under the backup target (`homes` or `projects`)."""
        return KIND_FOLDERS[self.kind]

    @property
    def relative_path(self) -> str:
        """`homes/<slug>` or `projects/<slug>`, relative to the backup target's root."""
        return f"{self.folder}/{self.slug}"

    @property
    def key(self) -> str:
        """Stable identifier (`home-<slug>`, `project-<slug>`): the passphrase's item in the
        keys Secret, and what records and metrics are keyed by."""
        key = f"{self.kind}-{self.slug}"
        if len(key) > MAX_SECRET_KEY:
            raise names.InvalidName(f"the name {self.name[:32]!r}... is too long for a backup")
        return key

    @property
    def digest(self) -> str:
        """Short digest of the key, for object names that must stay under 63 characters."""
        return hashlib.sha256(self.key.encode()).hexdigest()[:12]


def home(username: object) -> Repository:
    """The repository of a user's home; raises InvalidName for a name we refuse."""
    return Repository("home", names.username(username))


def project(group: object) -> Repository:
    """The repository of a project folder; IAM's leading '/' dropped like everywhere else."""
    return Repository("project", names.group(group))


def path_under(target_root: str, repository: Repository) -> str:
    """The repository's absolute path where the backup target is mounted at `target_root`."""
    if not target_root.startswith("/"):
        raise ValueError(f"the backup target's mount path must be absolute, not {target_root!r}")
    return f"{target_root.rstrip('/')}/{repository.relative_path}"
