"""Storage settings + user + projects -> the pod's volumes, mounts, init container and identity. Pure.

Everything is a PersistentVolumeClaim, a generic ephemeral volume, an emptyDir, an inline CSI
volume or a Secret, the volume types Pod Security "restricted" allows; NFS and local paths live
in PersistentVolumes the admin creates. Paths on the shared file systems come from the injective
`names.slug` of a name validated first, so two people never share a directory.

Volume names are stable, other components rely on them (Bunshin job clones mount exactly the
notebook's claims): `home`, `shared` (public area), `project-<slug>`, `envs`, `scratch`, `shm`,
`cvmfs`, `juicefs`, `bucket`, `access-token`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable, Sequence

from . import labels, names, tokens
from .errors import UserError
from .identity import Identity
from .storage_config import StorageSettings

JOB_KINDS = frozenset({"home", "projects", "scratch", "juicefs"})
# Of the job volume kinds, only these can be mounted by a job offloaded to a remote site.
REMOTE_MOUNTABLE = frozenset({"juicefs"})
INIT_CONTAINER = "storage-init"
INIT_ROOT = "/aiinfn-init"
SHM_PATH = "/dev/shm"
TOKEN_FILE_ENV = "AIINFN_ACCESS_TOKEN_FILE"
HOME_MODE = "0700"
PROJECT_MODE = "2770"
MAX_VOLUME_NAME = 63

# Runs as the user: creates each missing directory with its mode and, for project folders, hands
# it to the project gid (an owner may give a file to any group they belong to). Arguments come in
# triples (path, mode, group or "-") and are never interpolated into the script.
INIT_SCRIPT = """set -eu
while [ "$#" -ge 3 ]; do
  if mkdir -m "$2" "$1" 2>/dev/null; then
    if [ "$3" != "-" ]; then chgrp "$3" "$1"; fi
    chmod "$2" "$1"
  elif [ ! -d "$1" ]; then
    echo "storage-init: cannot create $1" >&2
    exit 1
  fi
  shift 3
done
"""


@dataclass(frozen=True)
class StorageUser:
    """Whose pod this is: the (validated) username, the projects they are in now, their numeric
    identity (with a gid for each project and, if they curate environments, the curator group),
    and whether their access-token Secret exists (only with an OIDC login)."""

    username: str
    identity: Identity
    projects: tuple[str, ...] = ()
    token: bool = False


@dataclass(frozen=True)
class PodStorage:
    """What the spawner puts on the pod."""

    volumes: list[dict]
    mounts: list[dict]
    init_containers: list[dict]
    security_context: dict
    environment: dict[str, str]


def project_volume_name(project: str) -> str:
    """`project-<slug>`; a slug too long for a volume name keeps its start plus a digest of the name."""
    name = f"project-{names.slug(names.group(project))}"
    if len(name) <= MAX_VOLUME_NAME:
        return name
    return f"{name[:50]}-{hashlib.sha256(project.encode()).hexdigest()[:12]}"


def project_claim(settings: StorageSettings, project: str) -> str:
    """The project's own claim, `<prefix>-<slug>`."""
    return names.object_name(settings.project_claim_prefix, names.group(project))


def project_mount_path(settings: StorageSettings, project: str) -> str:
    return f"{settings.projects_mount_root}/{names.group(project)}"


def _claim(name: str, claim: str, read_only: bool | None = None) -> dict:
    source: dict = {"claimName": claim}
    if read_only is not None:
        source["readOnly"] = read_only
    return {"name": name, "persistentVolumeClaim": source}


def _mount(name: str, path: str, sub_path: str | None = None, read_only: bool | None = None) -> dict:
    mount: dict = {"name": name, "mountPath": path}
    if sub_path is not None:
        mount["subPath"] = sub_path
    if read_only is not None:
        mount["readOnly"] = read_only
    return mount


def _home(settings: StorageSettings, username: str) -> tuple[dict, dict]:
    return (_claim("home", settings.home_claim),
            _mount("home", settings.home_mount_path, names.slug(username)))


def _projects(settings: StorageSettings, projects: Sequence[str]) -> tuple[list[dict], list[dict]]:
    volumes, mounts = [], []
    for project in projects:
        name = project_volume_name(project)
        volumes.append(_claim(name, project_claim(settings, project)))
        mounts.append(_mount(name, project_mount_path(settings, project), names.slug(project)))
    return volumes, mounts


def _scratch(settings: StorageSettings, size: str) -> tuple[dict, dict]:
    if settings.scratch_storage_class:
        volume = {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {
            "metadata": {"labels": {labels.MANAGED_BY: labels.MANAGED_BY_VALUE, labels.COMPONENT: "scratch"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": settings.scratch_storage_class,
                     "resources": {"requests": {"storage": size}}},
        }}}
    else:
        volume = {"name": "scratch", "emptyDir": {"sizeLimit": size}}
    return volume, _mount("scratch", settings.scratch_mount_path)


def _juicefs(settings: StorageSettings, username: str) -> tuple[dict, dict]:
    return (_claim("juicefs", settings.juicefs_claim),
            _mount("juicefs", settings.juicefs_mount_path, names.slug(username)))


def _bucket(settings: StorageSettings, username: str) -> tuple[dict, dict]:
    slug = names.slug(username)
    attributes = {key: value.replace("{username}", username).replace("{user_slug}", slug)
                  for key, value in settings.bucket_volume_attributes.items()}
    volume = {"name": "bucket", "csi": {
        "driver": settings.bucket_csi_driver,
        "volumeAttributes": attributes,
        "nodePublishSecretRef": {"name": tokens.secret_name(username)},
    }}
    return volume, _mount("bucket", settings.bucket_mount_path)


def _token(username: str) -> tuple[dict, dict]:
    volume = {"name": tokens.VOLUME_NAME, "secret": {
        "secretName": tokens.secret_name(username),
        "items": [{"key": tokens.KEY, "path": tokens.KEY}],
        "defaultMode": 0o440,
    }}
    return volume, _mount(tokens.VOLUME_NAME, tokens.MOUNT_DIR, read_only=True)


def pod_security_context(identity: Identity) -> dict:
    """Pod-level identity: the user's uid, private gid, project gids; files on volumes that
    support it (emptyDir, scratch, the token file) belong to the private gid."""
    return {
        "runAsUser": identity.uid,
        "runAsGroup": identity.gid,
        "runAsNonRoot": True,
        "fsGroup": identity.gid,
        "fsGroupChangePolicy": "OnRootMismatch",
        "supplementalGroups": identity.supplemental_gids,
        # Only these groups: an image's /etc/group cannot add a project gid to the user.
        "supplementalGroupsPolicy": "Strict",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context(identity: Identity) -> dict:
    """What "restricted" asks of every container, spelled out."""
    return {
        "runAsUser": identity.uid,
        "runAsGroup": identity.gid,
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def init_container(settings: StorageSettings, user: StorageUser, image: str) -> dict:
    """The unprivileged container that creates the user's home and project folders on first use."""
    username = names.username(user.username)
    slug = names.slug(username)
    mounts = [_mount("home", f"{INIT_ROOT}/home")]
    args = [f"{INIT_ROOT}/home/{slug}", HOME_MODE, "-"]
    for project in user.projects:
        volume = project_volume_name(project)
        mounts.append(_mount(volume, f"{INIT_ROOT}/{volume}"))
        args += [f"{INIT_ROOT}/{volume}/{names.slug(project)}", PROJECT_MODE, str(user.identity.group_gids[project])]
    if settings.juicefs_claim:
        mounts.append(_mount("juicefs", f"{INIT_ROOT}/juicefs"))
        args += [f"{INIT_ROOT}/juicefs/{slug}", HOME_MODE, "-"]
    return {
        "name": INIT_CONTAINER,
        "image": settings.init_image or image,
        "command": ["sh", "-c", INIT_SCRIPT, INIT_CONTAINER, *args],
        "securityContext": container_security_context(user.identity),
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "500m", "memory": "64Mi"}},
        "volumeMounts": mounts,
    }


def build(settings: StorageSettings, user: StorageUser, scratch_size: str, shm_size: str, image: str) -> PodStorage:
    """Every volume of a notebook pod. The username is validated before any path is derived;
    projects are the user's current ones, each with its gid in user.identity."""
    username = names.username(user.username)
    missing = [p for p in user.projects if p not in user.identity.group_gids]
    if missing:
        raise ValueError(f"no gid for project(s) {', '.join(missing)}")
    curator = bool(settings.envs_curator_group) and settings.envs_curator_group in user.identity.group_gids
    pairs = [_home(settings, username)]
    if settings.public_claim:
        pairs.append((_claim("shared", settings.public_claim), _mount("shared", settings.public_mount_path)))
    project_volumes, project_mounts = _projects(settings, user.projects)
    pairs += list(zip(project_volumes, project_mounts))
    if settings.envs_claim:
        pairs.append((_claim("envs", settings.envs_claim, read_only=not curator),
                      _mount("envs", settings.envs_mount_path, read_only=not curator)))
    pairs.append(_scratch(settings, scratch_size))
    pairs.append(({"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size}}, _mount("shm", SHM_PATH)))
    if settings.cvmfs_claim:
        cvmfs_mount = _mount("cvmfs", settings.cvmfs_mount_path, read_only=True)
        # CVMFS repositories are automounted on the node on first access; let them propagate in.
        cvmfs_mount["mountPropagation"] = "HostToContainer"
        pairs.append((_claim("cvmfs", settings.cvmfs_claim, read_only=True), cvmfs_mount))
    if settings.juicefs_claim:
        pairs.append(_juicefs(settings, username))
    environment = {}
    if user.token:
        if settings.bucket_csi_driver:
            pairs.append(_bucket(settings, username))
        pairs.append(_token(username))
        environment[TOKEN_FILE_ENV] = tokens.TOKEN_PATH
    init = [init_container(settings, user, image)] if settings.init_directories else []
    return PodStorage(
        volumes=[volume for volume, _ in pairs],
        mounts=sorted((mount for _, mount in pairs), key=lambda m: m["mountPath"]),
        init_containers=init,
        security_context=pod_security_context(user.identity),
        environment=environment,
    )


def for_job(settings: StorageSettings, user: str, projects: Sequence[str], kinds: Iterable[str],
            scratch_size: str | None = None) -> tuple[list[dict], list[dict]]:
    """A job's volumes and mounts for the kinds it asks for (home, projects, scratch, juicefs), at
    the notebook's paths. Unknown or unavailable kinds are a 400."""
    username = names.username(user)
    wanted = set(kinds)
    unknown = wanted - JOB_KINDS
    if unknown:
        raise UserError(f"unknown volume kind(s) {', '.join(sorted(map(str, unknown)))[:120]}; "
                        f"choose from {', '.join(sorted(JOB_KINDS))}", reason="invalid")
    if "juicefs" in wanted and not settings.juicefs_claim:
        raise UserError("JuiceFS is not available on this platform", reason="invalid")
    pairs = []
    if "home" in wanted:
        pairs.append(_home(settings, username))
    if "projects" in wanted:
        pairs += list(zip(*_projects(settings, projects)))
    if "scratch" in wanted:
        pairs.append(_scratch(settings, scratch_size or settings.default_scratch_size))
    if "juicefs" in wanted:
        pairs.append(_juicefs(settings, username))
    return [v for v, _ in pairs], sorted((m for _, m in pairs), key=lambda m: m["mountPath"])
