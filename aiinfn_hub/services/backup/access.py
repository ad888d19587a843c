"""Who may use which repository, and where a restore goes. Pure; refusals are UserErrors.

A user reads, restores from and backs up their own home's repository and those of the projects
they belong to; an admin any. A user's restore always lands in `~/restored/<archive>/...` of
their own home (a project's files too: they may read them, the project folder is shared); an
admin may pick a folder inside the repository's own home or project folder. Every check runs
before anything is created: a refusal leaves no Job, no uid, no passphrase behind.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

from ...errors import UserError
from ..base import HubUser
from . import paths, repos
from .repos import Repository

FORBIDDEN = "you may use the backups of your own home and of the projects you belong to, no others"


class Forbidden(UserError):
    """The caller may not use this repository (the message names nobody else's data)."""

    def __init__(self, message: str = FORBIDDEN) -> None:
        super().__init__(message, reason="forbidden", status=403)


class NotFound(UserError):
    def __init__(self, message: str) -> None:
        super().__init__(message, reason="not-found", status=404)


def repository(kind: object, name: object, projects: Collection[str]) -> Repository:
    """The repository a request names: kind `home` or `project`, a valid name, and a project
    the catalog has (`projects`: every project key)."""
    if kind == "home":
        return repos.home(name)
    if kind == "project":
        found = repos.project(name)
        if found.name not in projects:
            raise NotFound(f"no project called {found.name[:64]!r}")
        return found
    raise paths.RestoreRefused("the kind of a backup is 'home' or 'project'")


def authorise(caller: HubUser, repository: Repository, member_of: Collection[str]) -> None:
    """Raise Forbidden unless the caller may use this repository."""
    if caller.admin:
        return
    if repository.kind == "home" and repository.name == caller.name:
        return
    if repository.kind == "project" and repository.name in member_of:
        return
    raise Forbidden()


def is_own(caller: HubUser, repository: Repository, member_of: Collection[str]) -> bool:
    """Whether the caller reads this repository as themselves (their home or a project of
    theirs); an admin reads any other as whoever it belongs to."""
    if repository.kind == "home":
        return repository.name == caller.name
    return repository.name in member_of


Into = Literal["own-home", "repository-volume"]


@dataclass(frozen=True)
class RestorePlan:
    """What a restore extracts, where (relative to which volume), and as whom."""

    target: paths.RestoreTarget
    into: Into
    as_caller: bool


def restore_plan(
    caller: HubUser,
    repository: Repository,
    member_of: Collection[str],
    archive: object,
    path: object,
    folder: object = None,
) -> RestorePlan:
    """A user's restore: `restored/<archive>/<path>` in their own home, as themselves. An
    admin's: the folder they chose (or `restored/<archive>`) in the repository's own volume,
    as its owner, unless the repository is theirs to read, which is then a user's restore."""
    authorise(caller, repository, member_of)
    own = is_own(caller, repository, member_of)
    if folder is not None and folder != "":
        if not caller.admin:
            raise Forbidden("only admins choose where a restore goes; yours goes to ~/restored/")
        return RestorePlan(paths.admin_target(archive, path, folder), "repository-volume", False)
    target = paths.user_target(archive, path)
    if own:
        return RestorePlan(target, "own-home", True)
    return RestorePlan(target, "repository-volume", False)
