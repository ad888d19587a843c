"""The demo's software environments (docs/demo.md, "An environment published, cloned and used
by a job"): `/envs` made as docs/storage.md has an admin make it, writable by the curators'
group, and a tiny example spec in the public area that installs offline.

The example is two hand-made pure-Python wheels: `demo_hello`, which the spec pins (on top of
the notebook image, which brings `ipykernel`), and `demo_extra`, the one package a user adds to
a clone. They are written at each demo start (milliseconds), so publishing needs no index.
"""

from __future__ import annotations

import os
from pathlib import Path

from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from aiinfn_hub import identity
from aiinfn_hub.storage_config import StorageSettings

from .wheels import make_wheel

EXAMPLE_FOLDER = "demo-envs"  # in the public area: /home/public/demo-envs
SPEC = """\
name: hello
display_name: Hello (demo)
description: the demo's example environment, one local wheel on the notebook image
kind: venv
requirements: requirements.txt
layer_on_base: true
"""
WHEELS = {
    "demo_hello": 'VERSION = "1.0"\n',
    "demo_extra": 'GREETING = "hello from the extra package"\n',
}


def write_example(public: Path) -> Path:
    """The example spec, its requirements and both wheels under public/demo-envs; returns the
    folder (world-readable, as files an admin leaves in the public area are)."""
    folder = public / EXAMPLE_FOLDER
    folder.mkdir(exist_ok=True)
    folder.chmod(0o755)
    hello, _ = (make_wheel(folder, name, "1.0", source) for name, source in WHEELS.items())
    (folder / "requirements.txt").write_text(f"{hello.name}\n")
    (folder / "hello.yaml").write_text(SPEC)
    for path in folder.iterdir():
        path.chmod(0o644)
    return folder


async def _record_kept_gid(
    api_client: client.ApiClient, namespace: str, gid: int, settings: StorageSettings
) -> None:
    """Record the curators' gid the kept /envs folder shows, when the record (rebuilt from the
    home and project folders at a restart) lacks it: what docs/storage.md has an admin do."""
    core = client.CoreV1Api(api_client)
    name = settings.identity_configmap
    try:
        current = await core.read_namespaced_config_map(name, namespace)
    except ApiException as error:
        if error.status != 404:
            raise
        current = None
    tables = identity.parse(current.data if current else None)
    if settings.envs_curator_group in tables.groups or gid in {
        *tables.users.values(),
        *tables.groups.values(),
    }:
        return
    groups = {**tables.groups, settings.envs_curator_group: gid}
    body = identity.make_configmap(name, identity.Tables(tables.users, groups))
    if current is None:
        await core.create_namespaced_config_map(namespace, body)
    else:
        body["metadata"]["resourceVersion"] = current.metadata.resource_version
        await core.replace_namespaced_config_map(name, namespace, body)


async def curators_export(
    api_client: client.ApiClient, namespace: str, envs: Path, settings: StorageSettings
) -> int:
    """/envs (the folder `envs`) owned by root and the curators' gid, mode 2775, with that gid
    in the namespace's identity record before any curator spawns; returns the gid."""
    kept = envs.stat().st_gid
    if settings.gid_min <= kept <= settings.gid_max:
        await _record_kept_gid(api_client, namespace, kept, settings)
    gid = await identity.IdentityStore(api_client, namespace, settings).gid(
        settings.envs_curator_group
    )
    if os.geteuid() == 0:  # otherwise every pod's uid is this user's (docs/devcluster.md)
        os.chown(envs, 0, gid)
    envs.chmod(0o2775)
    return gid


async def setup(api_client: client.ApiClient, namespace: str, folders: dict[str, Path]) -> Path:
    """/envs for the curators and the example spec; returns the example's folder."""
    settings = StorageSettings()
    await curators_export(api_client, namespace, folders[settings.envs_claim], settings)
    return write_example(folders[settings.public_claim])
