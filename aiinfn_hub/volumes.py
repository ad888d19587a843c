"""Storage settings + user + projects -> pod volumes, mounts, init container, identity. Pure.

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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from . import labels, names, tokens
from .errors import UserError
from .identity import Identity
from .storage_config import StorageSettings

JOB_KINDS = frozenset({"home", "projects", "scratch", "juicefs"})
# The kinds whose folders the init container makes; a notebook has them all (juicefs if configured).
NOTEBOOK_INIT_KINDS = frozenset({"home", "projects", "juicefs"})
# Of the job volume kinds, only these can be mounted by a job offloaded to a remote site.
REMOTE_MOUNTABLE = frozenset({"juicefs"})
INIT_CONTAINER = "storage-init"
INIT_ROOT = "/aiinfn-init"
SHM_PATH = "/dev/shm"
TOKEN_FILE_ENV = "AIINFN_ACCESS_TOKEN_FILE"
HOME_MODE = "0700"
PROJECT_MODE = "2770"
MAX_VOLUME_NAME = 63

# Runs as the user. Arguments come in fours (claim, root, folder name, project gid or "-" for the
# user's own folder) and are never interpolated into the script. A missing folder is created with
# its mode (a project's handed to its gid: an owner may give a file to any group they belong to).
# An existing one must already be the user's (a project's: the project gid's, group rwx, setgid)
# or it is refused, never silently used: the kubelet makes a missing subPath root:root 0755, and
# a lost identity record hands a number to someone else. Beside the folders, a marker
# `.aiinfn-uid-<uid>` (`.aiinfn-gid-<gid>`) is a symlink to `owner:<folder name>` (a target that
# never resolves, so `ln` cannot follow it), so a number already owning someone else's folder on
# this claim is refused too.
# No braces: KubeSpawner would expand them.
INIT_SCRIPT = """set -eu
uid=$(id -u)
say() (
  echo "storage-init: folder $name on claim $claim: $1." \\
    "An admin must fix this before this pod can start." >&2
)
check() (
  if [ -L "$folder" ] || [ ! -d "$folder" ]; then
    say "it cannot be created, or it is not a directory"; exit 1
  fi
  owner=$(stat -c %u "$folder") group=$(stat -c %g "$folder") found=$(stat -c %a "$folder")
  if [ "$gid" = "-" ]; then
    if [ "$owner" != "$uid" ]; then
      say "it belongs to uid $owner, not to this user (uid $uid)"; exit 1
    fi
  elif [ "$group" != "$gid" ]; then
    say "its group is gid $group, not the project's gid $gid"; exit 1
  elif [ -z "$(find "$folder" -prune -perm -2070)" ]; then
    if [ "$owner" != "$uid" ]; then
      say "its mode is $found; the project's members need 2770"; exit 1
    fi
    chmod g+rwxs "$folder"
  fi
)
mark() (
  if ln -s "owner:$name" "$marker" 2>/dev/null; then exit 0; fi
  if [ ! -L "$marker" ]; then say "it cannot be created in $root"; exit 1; fi
  if [ "$(readlink "$marker")" != "owner:$name" ]; then
    say "$number already owns another folder on this claim (see $marker)"; exit 1
  fi
)
while [ "$#" -ge 4 ]; do
  claim=$1 root=$2 name=$3 gid=$4
  shift 4
  folder=$root/$name
  if [ "$gid" = "-" ]; then
    number="uid $uid" marker=$root/.aiinfn-uid-$uid mode=0700
  else
    number="gid $gid" marker=$root/.aiinfn-gid-$gid mode=2770
  fi
  if [ ! -e "$folder" ] && [ ! -L "$folder" ]; then
    mark || exit 1
    if mkdir -m "$mode" "$folder" 2>/dev/null; then
      if [ "$gid" != "-" ]; then chgrp "$gid" "$folder"; chmod "$mode" "$folder"; fi
      continue
    fi
    sleep 1  # another pod is making it: let it hand the folder to its group first
  fi
  check || exit 1
  mark || exit 1
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
    """`project-<slug>`; a slug too long for a volume name keeps its start plus a digest."""
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


def _mount(
    name: str, path: str, sub_path: str | None = None, read_only: bool | None = None
) -> dict:
    mount: dict = {"name": name, "mountPath": path}
    if sub_path is not None:
        mount["subPath"] = sub_path
    if read_only is not None:
        mount["readOnly"] = read_only
    return mount


def _home(settings: StorageSettings, username: str) -> tuple[dict, dict]:
    return (
        _claim("home", settings.home_claim),
        _mount("home", settings.home_mount_path, names.slug(username)),
    )


def _projects(settings: StorageSettings, projects: Sequence[str]) -> tuple[list[dict], list[dict]]:
    volumes, mounts = [], []
    for project in projects:
        name = project_volume_name(project)
        volumes.append(_claim(name, project_claim(settings, project)))
        mounts.append(_mount(name, project_mount_path(settings, project), names.slug(project)))
    return volumes, mounts


def _scratch(settings: StorageSettings, size: str) -> tuple[dict, dict]:
    if settings.scratch_storage_class:
        volume = {
            "name": "scratch",
            "ephemeral": {
                "volumeClaimTemplate": {
                    "metadata": {
                        "labels": {
                            labels.MANAGED_BY: labels.MANAGED_BY_VALUE,
                            labels.COMPONENT: "scratch",
                        }
                    },
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "storageClassName": settings.scratch_storage_class,
                        "resources": {"requests": {"storage": size}},
                    },
                }
            },
        }
    else:
        volume = {"name": "scratch", "emptyDir": {"sizeLimit": size}}
    return volume, _mount("scratch", settings.scratch_mount_path)


def _juicefs(settings: StorageSettings, username: str) -> tuple[dict, dict]:
    return (
        _claim("juicefs", settings.juicefs_claim),
        _mount("juicefs", settings.juicefs_mount_path, names.slug(username)),
    )


def _bucket(settings: StorageSettings, username: str) -> tuple[dict, dict]:
    slug = names.slug(username)
    attributes = {
        key: value.replace("{username}", username).replace("{user_slug}", slug)
        for key, value in settings.bucket_volume_attributes.items()
    }
    volume = {
        "name": "bucket",
        "csi": {
            "driver": settings.bucket_csi_driver,
            "volumeAttributes": attributes,
            "nodePublishSecretRef": {"name": tokens.secret_name(username)},
        },
    }
    return volume, _mount("bucket", settings.bucket_mount_path)


def _token(username: str) -> tuple[dict, dict]:
    volume = {
        "name": tokens.VOLUME_NAME,
        "secret": {
            "secretName": tokens.secret_name(username),
            "items": [{"key": tokens.KEY, "path": tokens.KEY}],
            "defaultMode": 0o440,
        },
    }
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


def init_container(
    settings: StorageSettings,
    user: StorageUser,
    image: str,
    kinds: Iterable[str] = NOTEBOOK_INIT_KINDS,
) -> dict | None:
    """The unprivileged container that creates (or checks) the user's folders of these kinds
    (home, projects, juicefs) before any other container mounts them; None if there are none."""
    username = names.username(user.username)
    slug = names.slug(username)
    kinds = set(kinds)
    folders: list[tuple[str, str, str, int | None]] = []  # (volume, claim, name, project gid)
    if "home" in kinds:
        folders.append(("home", settings.home_claim, slug, None))
    if "projects" in kinds:
        folders += [
            (
                project_volume_name(p),
                project_claim(settings, p),
                names.slug(p),
                user.identity.group_gids[p],
            )
            for p in user.projects
        ]
    if "juicefs" in kinds and settings.juicefs_claim:
        folders.append(("juicefs", settings.juicefs_claim, slug, None))
    if not folders:
        return None
    args = []
    for volume, claim, name, gid in folders:
        args += [claim, f"{INIT_ROOT}/{volume}", name, "-" if gid is None else str(gid)]
    return {
        "name": INIT_CONTAINER,
        "image": settings.init_image or image,
        "command": ["sh", "-c", INIT_SCRIPT, INIT_CONTAINER, *args],
        "securityContext": container_security_context(user.identity),
        "resources": {
            "requests": {"cpu": "10m", "memory": "16Mi"},
            "limits": {"cpu": "500m", "memory": "64Mi"},
        },
        # A refusal's reason (the script's stderr) becomes the container status's message.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [_mount(volume, f"{INIT_ROOT}/{volume}") for volume, _, _, _ in folders],
    }


def init_containers(
    settings: StorageSettings, user: StorageUser, kinds: Iterable[str], image: str
) -> list[dict]:
    """The init container (if any) for the folder kinds a pod mounts: whichever pod comes first,
    notebook, job or clone, creates the folders with their owner and mode (never the kubelet, as
    root), and none uses a folder that is not the user's."""
    if not settings.init_directories:
        return []
    container = init_container(settings, user, image, kinds)
    return [container] if container else []


def build(
    settings: StorageSettings, user: StorageUser, scratch_size: str, shm_size: str, image: str
) -> PodStorage:
    """Every volume of a notebook pod. The username is validated before any path is derived;
    projects are the user's current ones, each with its gid in user.identity."""
    username = names.username(user.username)
    missing = [p for p in user.projects if p not in user.identity.group_gids]
    if missing:
        raise ValueError(f"no gid for project(s) {', '.join(missing)}")
    curator = (
        bool(settings.envs_curator_group)
        and settings.envs_curator_group in user.identity.group_gids
    )
    pairs = [_home(settings, username)]
    if settings.public_claim:
        pairs.append(
            (_claim("shared", settings.public_claim), _mount("shared", settings.public_mount_path))
        )
    project_volumes, project_mounts = _projects(settings, user.projects)
    pairs += list(zip(project_volumes, project_mounts, strict=True))
    if settings.envs_claim:
        pairs.append(
            (
                _claim("envs", settings.envs_claim, read_only=not curator),
                _mount("envs", settings.envs_mount_path, read_only=not curator),
            )
        )
    pairs.append(_scratch(settings, scratch_size))
    pairs.append(
        (
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size}},
            _mount("shm", SHM_PATH),
        )
    )
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
    init = init_containers(settings, user, NOTEBOOK_INIT_KINDS, image)
    return PodStorage(
        volumes=[volume for volume, _ in pairs],
        mounts=sorted((mount for _, mount in pairs), key=lambda m: m["mountPath"]),
        init_containers=init,
        security_context=pod_security_context(user.identity),
        environment=environment,
    )


def for_job(
    settings: StorageSettings,
    user: str,
    projects: Sequence[str],
    kinds: Iterable[str],
    scratch_size: str | None = None,
) -> tuple[list[dict], list[dict]]:
    """A job's volumes and mounts for the kinds it asks for (home, projects, scratch, juicefs), at
    the notebook's paths. Unknown or unavailable kinds are a 400."""
    username = names.username(user)
    wanted = set(kinds)
    unknown = wanted - JOB_KINDS
    if unknown:
        raise UserError(
            f"unknown volume kind(s) {', '.join(sorted(map(str, unknown)))[:120]}; "
            f"choose from {', '.join(sorted(JOB_KINDS))}",
            reason="invalid",
        )
    if "juicefs" in wanted and not settings.juicefs_claim:
        raise UserError("JuiceFS is not available on this platform", reason="invalid")
    pairs = []
    if "home" in wanted:
        pairs.append(_home(settings, username))
    if "projects" in wanted:
        pairs += list(zip(*_projects(settings, projects), strict=True))
    if "scratch" in wanted:
        pairs.append(_scratch(settings, scratch_size or settings.default_scratch_size))
    if "juicefs" in wanted:
        pairs.append(_juicefs(settings, username))
    return [v for v, _ in pairs], sorted((m for _, m in pairs), key=lambda m: m["mountPath"])
