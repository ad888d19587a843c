"""Stable numeric identity: a uid per user (also their private gid) and a gid per project.

Numbers are handed out once and recorded in a ConfigMap in the user namespace, so a user keeps their
uid across restarts, hub replicas and service processes, and files on the shared file systems keep
their owners. Users and groups draw from disjoint ranges, so a user and a project of the same name
never share a number; a recorded number is never reused or changed.

The allocation is pure (`assign`); `IdentityStore` only reads and writes the record with optimistic
concurrency: it writes with the resourceVersion it read, and on a conflict reads again.

The files are the other copy of the record: each user's folders are owned by their uid, each
project's by its gid (the storage-init container refuses a pod whose number owns someone else's
folder). `from_folders` rebuilds a lost record from what the storage shows; run by an admin where
the exports are mounted (`python -m aiinfn_hub.identity HOMES... --projects PROJECTS...`), and by
the dev cluster's storage at each start (the dev platform's
`aiinfn_dev.devstorage.restore_identities`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import escapism
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from . import k8s, labels, names
from .errors import UserError
from .storage_config import MAX_ID, MIN_ID, StorageSettings

USERS_KEY = "users"
GROUPS_KEY = "groups"
COMPONENT = "identity"
ATTEMPTS = 10
# After a lost race, wait a little (k8s.backoff_delay: growing, jittered, capped) so racing
# writers fall out of step.
BACKOFF = 0.05
BACKOFF_CAP = 1.0


class IdentityError(UserError):
    """No number can be handed out (a range is full, or the record is damaged): admins must act.
    A 503 for the user; the detail goes to the log."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            "your numeric identity cannot be assigned right now; please tell the platform admins",
            reason="identity",
            log_detail=detail,
            status=503,
        )


@dataclass(frozen=True)
class Identity:
    """What a pod runs as: the user's uid, their private gid (= uid), and the gids of the groups
    (projects, curators) they belong to now."""

    uid: int
    group_gids: Mapping[str, int] = field(default_factory=dict)

    @property
    def gid(self) -> int:
        return self.uid

    @property
    def supplemental_gids(self) -> list[int]:
        return sorted(self.group_gids.values())


@dataclass(frozen=True)
class Tables:
    """The record: exact names to numbers, users and groups kept apart."""

    users: Mapping[str, int] = field(default_factory=dict)
    groups: Mapping[str, int] = field(default_factory=dict)


Validator = Callable[[object], str]
"""`names.username` or `names.group`: the name, or InvalidName."""


def _table(raw: str | None, what: str, validate: Validator) -> dict[str, int]:
    if not raw:
        return {}
    try:
        document = json.loads(raw)
    except ValueError:
        raise IdentityError(f"identity record: {what} is not JSON") from None
    if not isinstance(document, dict):
        raise IdentityError(f"identity record: {what} is not a JSON object")
    table = {}
    for name, number in document.items():
        try:
            validate(name)
        except names.InvalidName as error:
            raise IdentityError(
                f"identity record: {what} has an invalid name: {error.message}"
            ) from None
        if (
            not isinstance(number, int)
            or isinstance(number, bool)
            or not MIN_ID <= number <= MAX_ID
        ):
            raise IdentityError(
                f"identity record: {what}[{name!r}] must be a number from {MIN_ID} to {MAX_ID}"
            )
        table[name] = number
    return table


def parse(data: Mapping[str, str] | None) -> Tables:
    """The record from the ConfigMap's data; refuses anything letting two owners share a number."""
    data = data or {}
    tables = Tables(
        _table(data.get(USERS_KEY), USERS_KEY, names.username),
        _table(data.get(GROUPS_KEY), GROUPS_KEY, names.group),
    )
    numbers = [*tables.users.values(), *tables.groups.values()]
    if len(numbers) != len(set(numbers)):
        raise IdentityError("identity record: a number is recorded for two names")
    return tables


def render(tables: Tables) -> dict[str, str]:
    """The ConfigMap's data: one JSON object per kind, sorted, so kubectl shows a stable record."""
    return {
        USERS_KEY: json.dumps(dict(sorted(tables.users.items())), separators=(",", ":")),
        GROUPS_KEY: json.dumps(dict(sorted(tables.groups.items())), separators=(",", ":")),
    }


def _allocate(
    table: dict[str, int], wanted: Iterable[str], low: int, high: int, used: set[int], what: str
) -> None:
    candidate = low
    for name in wanted:
        if name in table:
            continue
        while candidate in used:
            candidate += 1
        if candidate > high:
            raise IdentityError(f"identity record: no free {what} left in {low}..{high}")
        table[name] = candidate
        used.add(candidate)


def assign(
    tables: Tables, usernames: Sequence[str], groups: Sequence[str], settings: StorageSettings
) -> Tables:
    """The record with a number for each name (validated names only): existing numbers are kept,
    new ones are the lowest free in their range, in the order given."""
    users, group_table = dict(tables.users), dict(tables.groups)
    used = {*users.values(), *group_table.values()}
    _allocate(users, usernames, settings.uid_min, settings.uid_max, used, "uid")
    _allocate(group_table, groups, settings.gid_min, settings.gid_max, used, "gid")
    return Tables(users, group_table)


def make_configmap(name: str, tables: Tables, resource_version: str | None = None) -> dict:
    """The record as a ConfigMap; with a resourceVersion, a write fails if anyone wrote since."""
    metadata: dict = {
        "name": name,
        "labels": {
            labels.MANAGED_BY: labels.MANAGED_BY_VALUE,
            labels.PART_OF: labels.PART_OF_VALUE,
            labels.COMPONENT: COMPONENT,
        },
        "annotations": {
            labels.NOTE: "uids and gids handed out by aiinfn-hub; never edit or reuse a number"
        },
    }
    if resource_version:
        metadata["resourceVersion"] = resource_version
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": render(tables)}


def _unslug(slug: str, validate: Validator) -> str | None:
    """The name whose `names.slug` this folder name is; None for a folder we did not name."""
    try:
        name = validate(escapism.unescape(slug, escape_char="-"))
    except (names.InvalidName, ValueError):
        return None
    return name if names.slug(name) == slug else None


def _owners(
    found: Mapping[str, Iterable[int]], low: int, high: int, validate: Validator, what: str
) -> dict[str, int]:
    table: dict[str, int] = {}
    for slug, numbers in sorted(found.items()):
        name = _unslug(slug, validate)
        in_range = {n for n in numbers if low <= n <= high}
        if name is None or not in_range:
            continue  # not a folder of ours, or not owned by a handed-out number (root, say)
        if len(in_range) > 1:
            raise IdentityError(
                f"storage: the folders of {what} {name!r} belong to several "
                f"numbers {sorted(in_range)}"
            )
        table[name] = in_range.pop()
    return table


def from_folders(
    user_folders: Mapping[str, Iterable[int]],
    project_folders: Mapping[str, Iterable[int]],
    settings: StorageSettings,
) -> Tables:
    """The record the storage shows: folder name (a user's slug) -> the uids owning their folders
    (home, JuiceFS), folder name (a project's slug) -> the gids of its folders. Folders not named
    by us or owned outside the ranges are skipped; a name on two numbers, or a number on two
    names, is refused (it needs an admin, not a guess)."""
    tables = Tables(
        _owners(user_folders, settings.uid_min, settings.uid_max, names.username, "user"),
        _owners(project_folders, settings.gid_min, settings.gid_max, names.group, "project"),
    )
    for table, what in ((tables.users, "uid"), (tables.groups, "gid")):
        by_number: dict[int, list[str]] = {}
        for name, number in table.items():
            by_number.setdefault(number, []).append(name)
        shared = {n: owners for n, owners in by_number.items() if len(owners) > 1}
        if shared:
            number, owners = min(shared.items())
            raise IdentityError(
                f"storage: {what} {number} owns the folders of {', '.join(sorted(owners))}"
            )
    return parse(render(tables))


def scan(roots: Iterable[str | os.PathLike[str]], field: str) -> dict[str, set[int]]:
    """Folder name -> the numbers (`st_uid` or `st_gid`) owning it, over these claim roots."""
    found: dict[str, set[int]] = {}
    for root in roots:
        with os.scandir(root) as entries:
            for entry in entries:
                if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False):
                    number = getattr(entry.stat(follow_symlinks=False), field)
                    found.setdefault(entry.name, set()).add(number)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Print the identity ConfigMap the storage shows (for `kubectl create -f -`)."""
    parser = argparse.ArgumentParser(prog="python -m aiinfn_hub.identity", description=main.__doc__)
    parser.add_argument("homes", nargs="+", help="roots holding users' folders (homes, JuiceFS)")
    parser.add_argument("--projects", nargs="*", default=[], help="roots holding project folders")
    parser.add_argument(
        "--name", default=StorageSettings().identity_configmap, help="the ConfigMap's name"
    )
    args = parser.parse_args(argv)
    try:
        tables = from_folders(
            scan(args.homes, "st_uid"), scan(args.projects, "st_gid"), StorageSettings()
        )
    except IdentityError as error:
        print(f"{parser.prog}: {error.log_detail}", file=sys.stderr)
        return 1
    print(json.dumps(make_configmap(args.name, tables), indent=2))
    return 0


class IdentityStore:
    """The record of one namespace. Recorded numbers never change, so they are cached."""

    def __init__(
        self, api_client: client.ApiClient, namespace: str, settings: StorageSettings | None = None
    ) -> None:
        self.api = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.settings = settings or StorageSettings()
        self._users: dict[str, int] = {}
        self._groups: dict[str, int] = {}
        self._lock = asyncio.Lock()

    async def uid(self, username: str) -> int:
        """The user's uid (and private gid), handed out on first use."""
        return (await self.identity(username)).uid

    async def gid(self, group: str) -> int:
        """The group's gid, handed out on first use."""
        group = names.group(group)
        await self._ensure([], [group])
        return self._groups[group]

    async def identity(self, username: str, groups: Sequence[str] = ()) -> Identity:
        """The user's uid and the gids of these groups, all in one write at most."""
        username = names.username(username)
        groups = [names.group(g) for g in groups]
        await self._ensure([username], groups)
        return Identity(self._users[username], {g: self._groups[g] for g in groups})

    async def _ensure(self, usernames: list[str], groups: list[str]) -> None:
        if all(u in self._users for u in usernames) and all(g in self._groups for g in groups):
            return
        async with self._lock:
            for attempt in range(ATTEMPTS):
                if attempt:
                    await asyncio.sleep(k8s.backoff_delay(attempt, BACKOFF, BACKOFF_CAP))
                existing, version = await self._read()
                wanted = assign(existing, usernames, groups, self.settings)
                if wanted == existing or await self._write(wanted, version):
                    self._users.update(wanted.users)
                    self._groups.update(wanted.groups)
                    return
        raise IdentityError(
            f"identity record {self.namespace}/{self.settings.identity_configmap}: "
            f"still conflicting after {ATTEMPTS} attempts"
        )

    async def _read(self) -> tuple[Tables, str | None]:
        try:
            configmap = await self.api.read_namespaced_config_map(
                self.settings.identity_configmap, self.namespace
            )
        except ApiException as error:
            if error.status == 404:
                return Tables(), None
            raise
        return parse(configmap.data), configmap.metadata.resource_version

    async def _write(self, tables: Tables, version: str | None) -> bool:
        """True if written; False if someone else wrote first (read again and retry)."""
        # The client serialises a plain dict body as it is; its hints name only V1ConfigMap.
        body: Any = make_configmap(self.settings.identity_configmap, tables, version)
        try:
            if version is None:
                await self.api.create_namespaced_config_map(
                    self.namespace, body, field_validation=k8s.STRICT
                )
            else:
                await self.api.replace_namespaced_config_map(
                    self.settings.identity_configmap,
                    self.namespace,
                    body,
                    field_validation=k8s.STRICT,
                )
        except ApiException as error:
            if error.status in (409, 404):
                return False
            raise
        return True


if __name__ == "__main__":
    sys.exit(main())
