"""helm-values/storage.yaml on a dev cluster: the same objects, every volume a local folder.

The dev cluster has no NFS server and no CSI drivers, so each PersistentVolume's source becomes a
hostPath under a local root (PersistentVolumes may use hostPath under Pod Security "restricted";
only pods may not). The claims, the StorageClass and the RBAC are applied unchanged but for the
namespace, so the API server and the PV controller handle exactly what production gets. PVs are
cluster-wide, so each gets the namespace appended to its name. Used by the demo and the tests.

The folders outlive the dev cluster (the demo keeps them between runs), and so must the uid/gid
record: at each setup, a namespace without an identity record gets the one its kept folders
show (`identity.from_folders`), as an admin would rebuild a lost record in production.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Iterable

import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.utils import create_from_dict

from aiinfn_hub import identity, labels
from aiinfn_hub.storage_config import StorageSettings

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "helm-values" / "storage.yaml"
ROOT_MODE = f"{labels.PREFIX}/root-mode"


def load(path: str | os.PathLike = DEFAULT_PATH) -> list[dict]:
    return [d for d in yaml.safe_load_all(Path(path).read_text()) if d]


def _local_folder(spec: dict) -> str:
    """The folder standing in for a PV's source; PVs sharing an export share a folder."""
    if "nfs" in spec:
        return "nfs" + spec["nfs"]["path"]
    if "csi" in spec:
        return f"csi/{spec['csi']['driver']}/{spec['csi']['volumeHandle']}"
    raise ValueError(f"no local stand-in for this PersistentVolume source: {sorted(spec)}")


def pv_name(name: str, namespace: str) -> str:
    return f"{name}.{namespace}"


def for_namespace(documents: Iterable[dict], namespace: str, root: Path) -> list[dict]:
    """The objects for this namespace, PV sources replaced by folders under root."""
    result = []
    for original in documents:
        document = copy.deepcopy(original)
        kind, metadata = document["kind"], document["metadata"]
        if kind == "PersistentVolume":
            spec = document["spec"]
            folder = root / _local_folder(spec)
            for source in ("nfs", "csi", "mountOptions"):
                spec.pop(source, None)
            spec["hostPath"] = {"path": str(folder), "type": "Directory"}
            spec["claimRef"] = {"namespace": namespace, "name": spec["claimRef"]["name"]}
            metadata["name"] = pv_name(metadata["name"], namespace)
        elif kind == "PersistentVolumeClaim":
            metadata["namespace"] = namespace
            document["spec"]["volumeName"] = pv_name(document["spec"]["volumeName"], namespace)
        elif kind in ("Role", "RoleBinding"):
            metadata["namespace"] = namespace
            for subject in document.get("subjects", []):
                subject["namespace"] = namespace
        result.append(document)
    return result


def make_folders(documents: Iterable[dict]) -> None:
    """Create the local folders of the (rewritten) PVs with the root modes production uses."""
    for document in documents:
        if document["kind"] != "PersistentVolume":
            continue
        folder = Path(document["spec"]["hostPath"]["path"])
        folder.mkdir(parents=True, exist_ok=True)
        mode = document["metadata"].get("annotations", {}).get(ROOT_MODE)
        folder.chmod(int(mode, 8) if mode else 0o755)


async def apply(api_client: client.ApiClient, documents: Iterable[dict]) -> None:
    """Server-side apply every object (idempotent)."""
    for document in documents:
        await create_from_dict(api_client, document, apply=True)


async def delete_volumes(api_client: client.ApiClient, documents: Iterable[dict]) -> None:
    """Delete the (cluster-wide) PVs made for a namespace; its claims go with the namespace."""
    core = client.CoreV1Api(api_client)
    for document in documents:
        if document["kind"] == "PersistentVolume":
            try:
                await core.delete_persistent_volume(document["metadata"]["name"])
            except client.ApiException as error:
                if error.status != 404:
                    raise


async def claims_bound(api_client: client.ApiClient, namespace: str, documents: Iterable[dict]) -> bool:
    """True once every claim among the documents is Bound (the PV controller pairs them)."""
    wanted = {d["metadata"]["name"] for d in documents if d["kind"] == "PersistentVolumeClaim"}
    claims = await client.CoreV1Api(api_client).list_namespaced_persistent_volume_claim(namespace)
    return wanted <= {c.metadata.name for c in claims.items if c.status.phase == "Bound"}


def claim_folders(documents: Iterable[dict]) -> dict[str, Path]:
    """Claim name -> the local folder of its (rewritten) PV."""
    return {d["spec"]["claimRef"]["name"]: Path(d["spec"]["hostPath"]["path"])
            for d in documents if d["kind"] == "PersistentVolume"}


def identities_on_storage(documents: Iterable[dict], settings: StorageSettings) -> identity.Tables:
    """The uid/gid record the folders of these (rewritten) PVs show."""
    folders = claim_folders(documents)
    users = {folders[c] for c in (settings.home_claim, settings.juicefs_claim) if c in folders}
    prefix = f"{settings.project_claim_prefix}-"
    projects = {folder for claim, folder in folders.items() if claim.startswith(prefix)}
    return identity.from_folders(identity.scan(sorted(users), "st_uid"),
                                 identity.scan(sorted(projects), "st_gid"), settings)


async def restore_identities(api_client: client.ApiClient, namespace: str,
                             documents: Iterable[dict],
                             settings: StorageSettings | None = None) -> identity.Tables | None:
    """Give a namespace without an identity record the one its kept folders show; returns what
    was written (None: a record exists, or the folders show nothing)."""
    settings = settings or StorageSettings()
    tables = identities_on_storage(documents, settings)
    if not tables.users and not tables.groups:
        return None
    body = identity.make_configmap(settings.identity_configmap, tables)
    try:
        await client.CoreV1Api(api_client).create_namespaced_config_map(namespace, body)
    except client.ApiException as error:
        if error.status == 409:
            return None
        raise
    return tables


async def setup(api_client: client.ApiClient, namespace: str, root: Path,
                path: str | os.PathLike = DEFAULT_PATH,
                settings: StorageSettings | None = None) -> list[dict]:
    """Folders, objects and the identity record kept on the folders, for one namespace; returns
    what was applied (for delete_volumes)."""
    documents = for_namespace(load(path), namespace, root)
    make_folders(documents)
    await apply(api_client, documents)
    await restore_identities(api_client, namespace, documents, settings)
    return documents
