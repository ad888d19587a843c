"""Storage settings: one traitlets Configurable (`c.AiInfnStorage.*`) for the hub and the services.

The hub's spawner and a service process (the job service) build volumes from the same settings:
`AiInfnStorage(parent=spawner).settings()` or `AiInfnStorage(config=cfg).settings()` gives the
frozen `StorageSettings` the pure builders in `volumes.py` take. Every value is checked when
the Configurable is made, so a bad key fails with its name, never halfway through a spawn.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from traitlets import Bool, Dict, Int, TraitError, Unicode, validate
from traitlets.config import Config, Configurable

from .admin_files import QUANTITY_PATTERN

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# CSI volume attribute keys are qualified names; values are free text with {username}/{user_slug}.
ATTRIBUTE_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
# Numbers below this are system accounts on every distribution; never hand them to a person.
MIN_ID = 1000
MAX_ID = 2**31 - 1

# Fixed mount points: the memory-backed /dev/shm and the access-token folder (tokens.MOUNT_DIR).
RESERVED_PATHS = {"shm": "/dev/shm", "access-token": "/var/run/secrets/aiinfn"}
MOUNT_PATH_TRAITS = (
    "home_mount_path",
    "public_mount_path",
    "projects_mount_root",
    "envs_mount_path",
    "scratch_mount_path",
    "cvmfs_mount_path",
    "juicefs_mount_path",
    "bucket_mount_path",
)


@dataclass(frozen=True)
class StorageSettings:
    """Everything the volume builders need; an empty claim or driver name turns that volume off."""

    home_claim: str = "aiinfn-home"
    home_mount_path: str = "/home/jovyan"
    public_claim: str = "aiinfn-shared"
    public_mount_path: str = "/home/public"
    project_claim_prefix: str = "aiinfn-project"
    projects_mount_root: str = "/home/shared"
    envs_claim: str = "aiinfn-envs"
    envs_mount_path: str = "/envs"
    envs_curator_group: str = "envs-admins"
    scratch_storage_class: str = ""
    scratch_mount_path: str = "/scratch"
    default_scratch_size: str = "20Gi"
    default_shm_size: str = "1Gi"
    cvmfs_claim: str = "aiinfn-cvmfs"
    cvmfs_mount_path: str = "/cvmfs"
    juicefs_claim: str = ""
    juicefs_mount_path: str = "/juicefs"
    bucket_csi_driver: str = ""
    bucket_volume_attributes: Mapping[str, str] = field(default_factory=dict)
    bucket_mount_path: str = "/bucket"
    init_directories: bool = True
    init_image: str = ""
    uid_min: int = 100000
    uid_max: int = 199999
    gid_min: int = 200000
    gid_max: int = 299999
    identity_configmap: str = "aiinfn-identities"


_DEFAULTS = StorageSettings()


def _claim_trait(default: str, what: str, optional: bool = True) -> Unicode:
    off = " Empty: no such volume." if optional else ""
    return Unicode(
        default, config=True, help=f"PersistentVolumeClaim (in the user namespace) for {what}.{off}"
    )


class AiInfnStorage(Configurable):
    """Where each volume of a notebook (and of a job) comes from and where it is mounted."""

    home_claim = _claim_trait(
        _DEFAULTS.home_claim,
        "all homes; each user mounts the sub-directory named by "
        "the injective slug of their username",
        optional=False,
    )
    home_mount_path = Unicode(
        _DEFAULTS.home_mount_path, config=True, help="Where the user's home is mounted."
    )
    public_claim = _claim_trait(
        _DEFAULTS.public_claim, "the public shared area every user can read and write"
    )
    public_mount_path = Unicode(
        _DEFAULTS.public_mount_path,
        config=True,
        help="Where the public shared area is mounted (outside projects_mount_root, "
        "so no project name can collide with it).",
    )
    project_claim_prefix = Unicode(
        _DEFAULTS.project_claim_prefix,
        config=True,
        help="""Each research project has its own claim `<prefix>-<project slug>` (one
        PersistentVolume each, so a project's volume can live anywhere); its folder is the
        sub-directory named by the project slug, group-owned by the project gid.""",
    )
    projects_mount_root = Unicode(
        _DEFAULTS.projects_mount_root,
        config=True,
        help="Project folders are mounted at <root>/<project name>.",
    )
    envs_claim = _claim_trait(
        _DEFAULTS.envs_claim,
        "the managed environments (conda, Apptainer images), "
        "read-only except for the curator group",
    )
    envs_mount_path = Unicode(
        _DEFAULTS.envs_mount_path, config=True, help="Where managed environments are mounted."
    )
    envs_curator_group = Unicode(
        _DEFAULTS.envs_curator_group,
        config=True,
        help="""Hub group whose members mount the environments read-write and carry its gid (the
        environments' root must be group-writable by that gid). Empty: nobody writes.""",
    )
    scratch_storage_class = Unicode(
        _DEFAULTS.scratch_storage_class,
        config=True,
        help="""StorageClass of the node-local NVMe scratch, requested as a generic ephemeral volume
        (deleted with the pod). Empty: an emptyDir on the node's disk with a size limit instead.""",
    )
    scratch_mount_path = Unicode(
        _DEFAULTS.scratch_mount_path, config=True, help="Where scratch is mounted."
    )
    default_scratch_size = Unicode(
        _DEFAULTS.default_scratch_size,
        config=True,
        help="Scratch size when the chosen catalog size names none.",
    )
    default_shm_size = Unicode(
        _DEFAULTS.default_shm_size,
        config=True,
        help="Size of the memory-backed /dev/shm when the chosen catalog size names none.",
    )
    cvmfs_claim = _claim_trait(_DEFAULTS.cvmfs_claim, "CVMFS (a CSI-backed, read-only volume)")
    cvmfs_mount_path = Unicode(
        _DEFAULTS.cvmfs_mount_path, config=True, help="Where CVMFS is mounted."
    )
    juicefs_claim = _claim_trait(
        _DEFAULTS.juicefs_claim,
        "the JuiceFS file system (CSI; the only volume "
        "offloaded jobs can mount at remote sites); each user gets their sub-directory",
    )
    juicefs_mount_path = Unicode(
        _DEFAULTS.juicefs_mount_path, config=True, help="Where JuiceFS is mounted."
    )
    bucket_csi_driver = Unicode(
        _DEFAULTS.bucket_csi_driver,
        config=True,
        help="""CSI driver that mounts the user's object-store bucket as an inline CSI volume, given
        the user's access-token Secret as its node-publish secret (the driver should declare
        requiresRepublish so a refreshed token reaches the mount). Empty: no bucket volume.""",
    )
    bucket_volume_attributes = Dict(
        value_trait=Unicode(),
        key_trait=Unicode(),
        config=True,
        help="""volumeAttributes for the bucket's CSI volume; `{username}` and `{user_slug}` in a
        value are replaced by the user's name and its injective slug (e.g. a bucket per user).""",
    )
    bucket_mount_path = Unicode(
        _DEFAULTS.bucket_mount_path, config=True, help="Where the bucket is mounted."
    )
    init_directories = Bool(
        _DEFAULTS.init_directories,
        config=True,
        help="""Run an unprivileged init container, as the user, in every pod that mounts the
        user's folders (notebooks, batch jobs, clones): it creates the home (0700) and project
        folders (setgid, group-owned by the project gid) the first time, and refuses the pod if an
        existing one is not the user's (or its uid/gid already owns another folder). Turn off when
        the directories are provisioned another way.""",
    )
    init_image = Unicode(
        _DEFAULTS.init_image,
        config=True,
        help="""Image of that init container (needs sh, id, mkdir, chgrp, chmod,
                         stat, find, ln, readlink); it sees the claims' roots, so prefer one the
                         platform trusts. Empty: the notebook image.""",
    )
    uid_min = Int(
        _DEFAULTS.uid_min, config=True, help="Lowest uid handed to a user (also their private gid)."
    )
    uid_max = Int(_DEFAULTS.uid_max, config=True, help="Highest uid handed to a user.")
    gid_min = Int(
        _DEFAULTS.gid_min,
        config=True,
        help="Lowest gid handed to a project or curator group; disjoint from the uid range.",
    )
    gid_max = Int(
        _DEFAULTS.gid_max, config=True, help="Highest gid handed to a project or curator group."
    )
    identity_configmap = Unicode(
        _DEFAULTS.identity_configmap,
        config=True,
        help="ConfigMap (in the user namespace) that records every uid and gid handed out.",
    )

    @validate(
        "home_claim",
        "public_claim",
        "envs_claim",
        "cvmfs_claim",
        "juicefs_claim",
        "identity_configmap",
        "scratch_storage_class",
        "bucket_csi_driver",
    )
    def _validate_object_name(self, proposal):
        value = proposal["value"]
        name = proposal["trait"].name
        if name == "home_claim" and not value:
            raise TraitError("AiInfnStorage.home_claim: every user needs a home; name its claim")
        if value and not DNS_SUBDOMAIN.fullmatch(value):
            raise TraitError(f"AiInfnStorage.{name}: {value!r} is not a Kubernetes object name")
        return value

    @validate("project_claim_prefix")
    def _validate_project_claim_prefix(self, proposal):
        value = proposal["value"]
        if not DNS_LABEL.fullmatch(value) or len(value) > 40:
            raise TraitError(
                f"AiInfnStorage.project_claim_prefix: {value!r} must be a short DNS label"
            )
        return value

    @validate(*MOUNT_PATH_TRAITS)
    def _validate_mount_path(self, proposal):
        value = proposal["value"]
        name = proposal["trait"].name
        if (
            not value.startswith("/")
            or value == "/"
            or posixpath.normpath(value) != value
            or any(part in ("..", ".") for part in value.split("/"))
            or len(value) > 200
        ):
            raise TraitError(
                f"AiInfnStorage.{name}: {value!r} must be a normalised absolute path below /"
            )
        return value

    @validate("default_scratch_size", "default_shm_size")
    def _validate_size(self, proposal):
        value = proposal["value"]
        if not QUANTITY_PATTERN.fullmatch(value):
            raise TraitError(
                f"AiInfnStorage.{proposal['trait'].name}: {value!r} is not a quantity such as 20Gi"
            )
        return value

    @validate("bucket_volume_attributes")
    def _validate_bucket_volume_attributes(self, proposal):
        value = proposal["value"]
        for key in value:
            if not ATTRIBUTE_KEY.fullmatch(key):
                raise TraitError(
                    f"AiInfnStorage.bucket_volume_attributes: {key!r} is not an attribute name"
                )
        return value

    @validate("uid_min", "uid_max", "gid_min", "gid_max")
    def _validate_id(self, proposal):
        value = proposal["value"]
        if not MIN_ID <= value <= MAX_ID:
            raise TraitError(
                f"AiInfnStorage.{proposal['trait'].name}: must be between {MIN_ID} and {MAX_ID}"
            )
        return value

    def settings(self) -> StorageSettings:
        """The frozen settings, after the checks that involve several keys."""
        if self.uid_min > self.uid_max or self.gid_min > self.gid_max:
            raise TraitError("AiInfnStorage: uid_min/gid_min must not exceed uid_max/gid_max")
        if self.uid_min <= self.gid_max and self.gid_min <= self.uid_max:
            raise TraitError(
                "AiInfnStorage: the uid and gid ranges must not overlap (a user's private "
                "group and a project must never share a number)"
            )
        paths = {**{name: getattr(self, name) for name in MOUNT_PATH_TRAITS}, **RESERVED_PATHS}
        for name in MOUNT_PATH_TRAITS:
            path = paths[name]
            for other, other_path in paths.items():
                if other != name and (
                    path == other_path
                    or path.startswith(other_path + "/")
                    or other_path.startswith(path + "/")
                ):
                    raise TraitError(
                        f"AiInfnStorage.{name}: {path!r} overlaps {other} ({other_path!r}); "
                        "mounts must not nest"
                    )
        values = {name: getattr(self, name) for name in StorageSettings.__dataclass_fields__}
        values["bucket_volume_attributes"] = dict(self.bucket_volume_attributes)
        return StorageSettings(**values)


def check_config(config: Config) -> None:
    """Build the storage settings from a loaded hub config; exit naming the bad key if any."""
    try:
        AiInfnStorage(config=config).settings()
    except TraitError as error:
        raise SystemExit(f"aiinfn-hub: invalid storage configuration: {error}") from None
