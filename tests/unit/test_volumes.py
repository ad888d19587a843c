"""Notebook and job storage as literal manifests; settings checked at construction; the init
script run for real by sh."""

from __future__ import annotations

import copy
import os
import pathlib
import shutil
import stat
import subprocess
import tempfile

import pytest
import yaml
from traitlets import TraitError
from traitlets.config import Config

from aiinfn_hub import catalog, hubstate, names, storage_config, volumes
from aiinfn_hub.errors import UserError
from aiinfn_hub.identity import Identity
from aiinfn_hub.storage_config import AiInfnStorage, StorageSettings

IMAGE = "harbor.cloud.infn.it/ai-infn/ml-gpu:2025.10"
EVERYTHING = StorageSettings(
    scratch_storage_class="aiinfn-scratch",
    juicefs_claim="aiinfn-juicefs",
    bucket_csi_driver="rclone.csi.example.org",
    bucket_volume_attributes={"remote": "rgw", "bucket": "user-{user_slug}", "owner": "{username}"},
)
CAROL = Identity(100002, {"cms-ml": 200000, "lhcb-flashsim": 200001, "envs-admins": 200003})
CAROL_USER = volumes.StorageUser("Carol.B", CAROL, ("cms-ml", "lhcb-flashsim"), token=True)
RESTRICTED_CONTAINER = {
    "runAsUser": 100002,
    "runAsGroup": 100002,
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def test_every_option_on_as_a_literal_manifest():
    storage = volumes.build(EVERYTHING, CAROL_USER, "100Gi", "8Gi", IMAGE)
    assert storage.volumes == [
        {"name": "home", "persistentVolumeClaim": {"claimName": "aiinfn-home"}},
        {"name": "shared", "persistentVolumeClaim": {"claimName": "aiinfn-shared"}},
        {
            "name": "project-cms-2dml",
            "persistentVolumeClaim": {"claimName": "aiinfn-project-cms-2dml"},
        },
        {
            "name": "project-lhcb-2dflashsim",
            "persistentVolumeClaim": {"claimName": "aiinfn-project-lhcb-2dflashsim"},
        },
        {"name": "envs", "persistentVolumeClaim": {"claimName": "aiinfn-envs", "readOnly": False}},
        {
            "name": "scratch",
            "ephemeral": {
                "volumeClaimTemplate": {
                    "metadata": {
                        "labels": {
                            "app.kubernetes.io/managed-by": "aiinfn-hub",
                            "app.kubernetes.io/component": "scratch",
                        }
                    },
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "storageClassName": "aiinfn-scratch",
                        "resources": {"requests": {"storage": "100Gi"}},
                    },
                }
            },
        },
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}},
        {"name": "cvmfs", "persistentVolumeClaim": {"claimName": "aiinfn-cvmfs", "readOnly": True}},
        {"name": "juicefs", "persistentVolumeClaim": {"claimName": "aiinfn-juicefs"}},
        {
            "name": "bucket",
            "csi": {
                "driver": "rclone.csi.example.org",
                "volumeAttributes": {
                    "remote": "rgw",
                    "bucket": "user--43arol-2e-42",
                    "owner": "Carol.B",
                },
                "nodePublishSecretRef": {"name": "aiinfn-token--43arol-2e-42"},
            },
        },
        {
            "name": "access-token",
            "secret": {
                "secretName": "aiinfn-token--43arol-2e-42",
                "items": [{"key": "access_token", "path": "access_token"}],
                "defaultMode": 0o440,
            },
        },
    ]
    assert storage.mounts == [
        {"name": "bucket", "mountPath": "/bucket"},
        {
            "name": "cvmfs",
            "mountPath": "/cvmfs",
            "readOnly": True,
            "mountPropagation": "HostToContainer",
        },
        {"name": "shm", "mountPath": "/dev/shm"},
        {"name": "envs", "mountPath": "/envs", "readOnly": False},
        {"name": "home", "mountPath": "/home/jovyan", "subPath": "-43arol-2e-42"},
        {"name": "shared", "mountPath": "/home/public"},
        {"name": "project-cms-2dml", "mountPath": "/home/shared/cms-ml", "subPath": "cms-2dml"},
        {
            "name": "project-lhcb-2dflashsim",
            "mountPath": "/home/shared/lhcb-flashsim",
            "subPath": "lhcb-2dflashsim",
        },
        {"name": "juicefs", "mountPath": "/juicefs", "subPath": "-43arol-2e-42"},
        {"name": "scratch", "mountPath": "/scratch"},
        {"name": "access-token", "mountPath": "/var/run/secrets/aiinfn", "readOnly": True},
    ]
    assert storage.init_containers == [
        {
            "name": "storage-init",
            "image": IMAGE,
            "command": [
                "sh",
                "-c",
                volumes.INIT_SCRIPT,
                "storage-init",
                "aiinfn-home",
                "/aiinfn-init/home",
                "-43arol-2e-42",
                "-",
                "aiinfn-project-cms-2dml",
                "/aiinfn-init/project-cms-2dml",
                "cms-2dml",
                "200000",
                "aiinfn-project-lhcb-2dflashsim",
                "/aiinfn-init/project-lhcb-2dflashsim",
                "lhcb-2dflashsim",
                "200001",
                "aiinfn-juicefs",
                "/aiinfn-init/juicefs",
                "-43arol-2e-42",
                "-",
            ],
            "securityContext": RESTRICTED_CONTAINER,
            "resources": {
                "requests": {"cpu": "10m", "memory": "16Mi"},
                "limits": {"cpu": "500m", "memory": "64Mi"},
            },
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "volumeMounts": [
                {"name": "home", "mountPath": "/aiinfn-init/home"},
                {"name": "project-cms-2dml", "mountPath": "/aiinfn-init/project-cms-2dml"},
                {
                    "name": "project-lhcb-2dflashsim",
                    "mountPath": "/aiinfn-init/project-lhcb-2dflashsim",
                },
                {"name": "juicefs", "mountPath": "/aiinfn-init/juicefs"},
            ],
        }
    ]
    assert storage.security_context == {
        "runAsUser": 100002,
        "runAsGroup": 100002,
        "runAsNonRoot": True,
        "fsGroup": 100002,
        "fsGroupChangePolicy": "OnRootMismatch",
        "supplementalGroups": [200000, 200001, 200003],
        "supplementalGroupsPolicy": "Strict",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert storage.environment == {
        "AIINFN_ACCESS_TOKEN_FILE": "/var/run/secrets/aiinfn/access_token"
    }


def test_everything_optional_off_leaves_home_scratch_and_shm():
    settings = StorageSettings(
        public_claim="",
        envs_claim="",
        cvmfs_claim="",
        init_directories=False,
        bucket_csi_driver="rclone.csi.example.org",
    )
    user = volumes.StorageUser("bob", Identity(100001))
    storage = volumes.build(settings, user, "20Gi", "1Gi", IMAGE)
    assert storage.volumes == [
        {"name": "home", "persistentVolumeClaim": {"claimName": "aiinfn-home"}},
        {"name": "scratch", "emptyDir": {"sizeLimit": "20Gi"}},
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
    ]
    assert storage.mounts == [
        {"name": "shm", "mountPath": "/dev/shm"},
        {"name": "home", "mountPath": "/home/jovyan", "subPath": "bob"},
        {"name": "scratch", "mountPath": "/scratch"},
    ]
    assert storage.init_containers == []
    assert storage.environment == {}
    assert storage.security_context["supplementalGroups"] == []


def test_envs_are_read_only_unless_the_user_curates_them():
    reader = volumes.build(
        StorageSettings(),
        volumes.StorageUser("bob", Identity(100001, {"qml": 200002})),
        "1Gi",
        "1Gi",
        IMAGE,
    )
    assert {
        "name": "envs",
        "persistentVolumeClaim": {"claimName": "aiinfn-envs", "readOnly": True},
    } in reader.volumes
    assert {"name": "envs", "mountPath": "/envs", "readOnly": True} in reader.mounts
    nobody = StorageSettings(envs_curator_group="")
    curator = volumes.build(
        nobody,
        volumes.StorageUser("bob", Identity(100001, {"envs-admins": 200003})),
        "1Gi",
        "1Gi",
        IMAGE,
    )
    assert {"name": "envs", "mountPath": "/envs", "readOnly": True} in curator.mounts


def test_without_a_token_there_is_no_token_file_and_no_bucket():
    user = volumes.StorageUser("alice", Identity(100000))
    storage = volumes.build(EVERYTHING, user, "1Gi", "1Gi", IMAGE)
    assert not {"bucket", "access-token"} & {v["name"] for v in storage.volumes}
    assert not any("aiinfn-token" in str(v) for v in storage.volumes)
    assert storage.environment == {}


def test_token_is_a_whole_secret_volume_so_the_kubelet_updates_it():
    storage = volumes.build(
        StorageSettings(),
        volumes.StorageUser("alice", Identity(100000), token=True),
        "1Gi",
        "1Gi",
        IMAGE,
    )
    token_mounts = [m for m in storage.mounts if m["name"] == "access-token"]
    assert token_mounts == [
        {"name": "access-token", "mountPath": "/var/run/secrets/aiinfn", "readOnly": True}
    ]
    assert "subPath" not in token_mounts[0]


def test_a_project_without_a_gid_is_a_bug_not_a_volume():
    with pytest.raises(ValueError, match="no gid for project"):
        volumes.build(
            StorageSettings(),
            volumes.StorageUser("bob", Identity(100001), ("qml",)),
            "1Gi",
            "1Gi",
            IMAGE,
        )


@pytest.mark.parametrize(
    "variants",
    [
        ["alice", "Alice", "ALICE"],
        ["alice", "a_lice", "a.lice", "a-lice", "al.ice", "a__lice"],
        ["a.b", "a-2eb", "a_b"],
    ],
)
def test_names_that_look_alike_get_different_homes(variants):
    homes = set()
    for name in variants:
        storage = volumes.build(
            StorageSettings(juicefs_claim="aiinfn-juicefs"),
            volumes.StorageUser(name, Identity(100000)),
            "1Gi",
            "1Gi",
            IMAGE,
        )
        (home,) = [m["subPath"] for m in storage.mounts if m["name"] == "home"]
        (juicefs,) = [m["subPath"] for m in storage.mounts if m["name"] == "juicefs"]
        assert home == juicefs == names.slug(name)
        homes.add(home)
    assert len(homes) == len(variants)


@pytest.mark.parametrize(
    "bad", ["a/b", "..", "a..b", "-rf", "a\x00b", "a" * 300, "\u0430lice", "ａlice", "", " alice"]
)
def test_bad_names_are_refused_before_any_path(bad):
    user = volumes.StorageUser(bad, Identity(100000), token=True)
    with pytest.raises(names.InvalidName) as refused:
        volumes.build(EVERYTHING, user, "1Gi", "1Gi", IMAGE)
    assert refused.value.status == 403
    with pytest.raises(names.InvalidName):
        volumes.init_container(EVERYTHING, user, IMAGE)
    with pytest.raises(names.InvalidName):
        volumes.for_job(EVERYTHING, bad, [], ["home"])


def test_project_volume_names_fit_and_stay_distinct():
    assert volumes.project_volume_name("cms-ml") == "project-cms-2dml"
    assert (
        volumes.project_claim(StorageSettings(), "lhcb/flashsim")
        == "aiinfn-project-lhcb-2fflashsim"
    )
    long_a, long_b = "p" * 100 + "a", "p" * 100 + "b"
    name_a, name_b = volumes.project_volume_name(long_a), volumes.project_volume_name(long_b)
    assert len(name_a) <= 63 and len(name_b) <= 63 and name_a != name_b
    assert name_a == volumes.project_volume_name(long_a)
    with pytest.raises(names.InvalidName):
        volumes.project_volume_name("../etc")


def test_subgroup_projects_mount_below_their_parent_in_order():
    user = volumes.StorageUser(
        "carol",
        Identity(100002, {"lhcb/flashsim": 200005, "lhcb": 200004}),
        ("lhcb/flashsim", "lhcb"),
    )
    mounts = volumes.build(StorageSettings(), user, "1Gi", "1Gi", IMAGE).mounts
    paths = [m["mountPath"] for m in mounts]
    assert paths.index("/home/shared/lhcb") < paths.index("/home/shared/lhcb/flashsim")


def test_job_volumes_for_the_kinds_asked():
    settings = StorageSettings(juicefs_claim="aiinfn-juicefs")
    job_volumes, mounts = volumes.for_job(
        settings,
        "carol",
        ["cms-ml"],
        ["juicefs", "home", "projects", "scratch"],
        scratch_size="50Gi",
    )
    assert job_volumes == [
        {"name": "home", "persistentVolumeClaim": {"claimName": "aiinfn-home"}},
        {
            "name": "project-cms-2dml",
            "persistentVolumeClaim": {"claimName": "aiinfn-project-cms-2dml"},
        },
        {"name": "scratch", "emptyDir": {"sizeLimit": "50Gi"}},
        {"name": "juicefs", "persistentVolumeClaim": {"claimName": "aiinfn-juicefs"}},
    ]
    assert mounts == [
        {"name": "home", "mountPath": "/home/jovyan", "subPath": "carol"},
        {"name": "project-cms-2dml", "mountPath": "/home/shared/cms-ml", "subPath": "cms-2dml"},
        {"name": "juicefs", "mountPath": "/juicefs", "subPath": "carol"},
        {"name": "scratch", "mountPath": "/scratch"},
    ]
    assert volumes.for_job(settings, "carol", ["cms-ml"], ["juicefs"]) == (
        [{"name": "juicefs", "persistentVolumeClaim": {"claimName": "aiinfn-juicefs"}}],
        [{"name": "juicefs", "mountPath": "/juicefs", "subPath": "carol"}],
    )
    assert volumes.for_job(settings, "carol", [], ["scratch"])[0] == [
        {"name": "scratch", "emptyDir": {"sizeLimit": "20Gi"}}
    ]
    assert volumes.REMOTE_MOUNTABLE <= volumes.JOB_KINDS


@pytest.mark.parametrize(
    "settings, kinds, message",
    [
        (StorageSettings(), ["home", "envs"], "unknown volume kind(s) envs"),
        (StorageSettings(), ["juicefs"], "JuiceFS is not available"),
    ],
)
def test_job_kinds_outside_the_list_are_a_400(settings, kinds, message):
    with pytest.raises(UserError) as refused:
        volumes.for_job(settings, "carol", [], kinds)
    assert refused.value.status == 400 and message in refused.value.message


def _run_init(args, user=None):
    """The script as the storage-init container runs it (as `user`, a uid, when given)."""
    command = ["sh", "-c", volumes.INIT_SCRIPT, "storage-init", *args]
    if user is not None:
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def _roots(tmp_path):
    homes, projects = tmp_path / "home", tmp_path / "projects"
    for root in (homes, projects):
        root.mkdir()
        root.chmod(0o1733)
    return homes, projects


def test_init_script_creates_each_directory_once_with_its_mode_and_group(tmp_path):
    homes, projects = _roots(tmp_path)
    gid, uid = os.getgid(), os.getuid()
    args = [
        "aiinfn-home",
        str(homes),
        "alice",
        "-",
        "aiinfn-project-cms-2dml",
        str(projects),
        "cms-2dml",
        str(gid),
    ]
    assert _run_init(args).returncode == 0
    home, project = os.stat(homes / "alice"), os.stat(projects / "cms-2dml")
    assert stat.S_IMODE(home.st_mode) == 0o700 and home.st_uid == uid
    assert stat.S_IMODE(project.st_mode) == 0o2770 and project.st_gid == gid
    # Each number is marked as the owner of its folder on that claim.
    assert os.readlink(homes / f".aiinfn-uid-{uid}") == "owner:alice"
    assert os.readlink(projects / f".aiinfn-gid-{gid}") == "owner:cms-2dml"
    (homes / "alice" / "notes.txt").write_text("kept")
    (projects / "cms-2dml").chmod(0o2750)  # its owner took the members' write away: given back
    assert _run_init(args).returncode == 0
    assert (homes / "alice" / "notes.txt").read_text() == "kept"
    assert stat.S_IMODE(os.stat(projects / "cms-2dml").st_mode) == 0o2770
    failed = _run_init(["aiinfn-home", f"{tmp_path}/missing", "alice", "-"])
    assert failed.returncode == 1
    assert "folder alice on claim aiinfn-home: it cannot be created" in failed.stderr
    assert "An admin must fix this" in failed.stderr


needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="making folders of other owners takes root"
)


@pytest.fixture
def open_tmp():
    """A folder other uids can traverse (pytest's own tmp_path is private to its user)."""
    path = tempfile.mkdtemp(prefix="aiinfn-init-")
    os.chmod(path, 0o711)
    yield pathlib.Path(path)
    shutil.rmtree(path)


@needs_root
@pytest.mark.parametrize(
    "kind, owner, mode, message",
    [
        # What the kubelet leaves when a job came first without a set-up step.
        (
            "home",
            (0, 0),
            0o755,
            "folder alice on claim aiinfn-home: it belongs to uid 0, not to this user (uid 100001)",
        ),
        (
            "home",
            (100007, 100007),
            0o700,
            "it belongs to uid 100007, not to this user (uid 100001)",
        ),
        (
            "project",
            (0, 0),
            0o755,
            "folder cms-2dml on claim aiinfn-project-cms-2dml: its group is gid 0, "
            "not the project's gid 200001",
        ),
        ("project", (100007, 200001), 0o2750, "its mode is 2750; the project's members need 2770"),
    ],
)
def test_init_script_refuses_a_folder_that_is_not_the_users(open_tmp, kind, owner, mode, message):
    homes, projects = _roots(open_tmp)
    folder = homes / "alice" if kind == "home" else projects / "cms-2dml"
    folder.mkdir()
    os.chown(folder, *owner)
    folder.chmod(mode)
    args = [
        "aiinfn-home",
        str(homes),
        "alice",
        "-",
        "aiinfn-project-cms-2dml",
        str(projects),
        "cms-2dml",
        "200001",
    ]
    # As the user, a member of the project (what the pod's supplementalGroups give).
    command = [
        "setpriv",
        "--reuid=100001",
        "--regid=100001",
        "--groups=200001",
        "sh",
        "-c",
        volumes.INIT_SCRIPT,
        "storage-init",
        *args,
    ]
    failed = subprocess.run(command, capture_output=True, text=True, check=False)
    assert failed.returncode == 1 and message in failed.stderr, failed.stderr
    assert "An admin must fix this before this pod can start." in failed.stderr
    assert (os.stat(folder).st_uid, os.stat(folder).st_gid) == owner  # left as it was


@needs_root
def test_init_script_refuses_a_uid_that_already_owns_someone_elses_folder(open_tmp):
    homes, _ = _roots(open_tmp)
    assert _run_init(["aiinfn-home", str(homes), "bob", "-"], user=100001).returncode == 0
    # The record was lost: carol is handed bob's number.
    refused = _run_init(["aiinfn-home", str(homes), "carol", "-"], user=100001)
    assert refused.returncode == 1
    assert (
        "folder carol on claim aiinfn-home: uid 100001 already owns another folder on this claim"
        in refused.stderr
    )
    assert not (homes / "carol").exists() and os.listdir(homes / "bob") == []
    # Bob, handed a new number, finds his folder owned by the old one.
    refused = _run_init(["aiinfn-home", str(homes), "bob", "-"], user=100002)
    assert (
        refused.returncode == 1
        and "it belongs to uid 100001, not to this user (uid 100002)" in refused.stderr
    )
    assert not os.path.lexists(homes / ".aiinfn-uid-100002")
    assert _run_init(["aiinfn-home", str(homes), "bob", "-"], user=100001).returncode == 0


def test_init_containers_for_exactly_the_kinds_a_pod_mounts():
    user = volumes.StorageUser("alice", Identity(100001, {"qml": 200002}), ("qml",))
    settings = StorageSettings(juicefs_claim="aiinfn-juicefs")
    [container] = volumes.init_containers(settings, user, ["juicefs", "scratch"], IMAGE)
    assert container["command"][4:] == ["aiinfn-juicefs", "/aiinfn-init/juicefs", "alice", "-"]
    assert container["volumeMounts"] == [{"name": "juicefs", "mountPath": "/aiinfn-init/juicefs"}]
    [container] = volumes.init_containers(settings, user, ["projects"], IMAGE)
    assert container["command"][4:] == [
        "aiinfn-project-qml",
        "/aiinfn-init/project-qml",
        "qml",
        "200002",
    ]
    assert volumes.init_containers(settings, user, ["scratch"], IMAGE) == []
    assert volumes.init_containers(StorageSettings(), user, ["juicefs"], IMAGE) == []


def test_settings_from_config_and_their_defaults():
    config = Config()
    config.AiInfnStorage.juicefs_claim = "aiinfn-juicefs"
    config.AiInfnStorage.scratch_storage_class = "aiinfn-scratch"
    settings = AiInfnStorage(config=config).settings()
    assert settings == StorageSettings(
        juicefs_claim="aiinfn-juicefs", scratch_storage_class="aiinfn-scratch"
    )
    assert AiInfnStorage().settings() == StorageSettings()


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("home_claim", "", "every user needs a home"),
        ("cvmfs_claim", "CVMFS_Claim", "is not a Kubernetes object name"),
        ("project_claim_prefix", "a.b", "must be a short DNS label"),
        ("home_mount_path", "home/jovyan", "normalised absolute path"),
        ("scratch_mount_path", "/scratch/../etc", "normalised absolute path"),
        ("envs_mount_path", "/", "normalised absolute path"),
        ("default_shm_size", "lots", "not a quantity"),
        ("uid_min", 0, "between 1000"),
        ("bucket_volume_attributes", {"bad key!": "x"}, "not an attribute name"),
    ],
)
def test_bad_settings_name_the_key(key, value, message):
    config = Config()
    config.AiInfnStorage[key] = value
    with pytest.raises(TraitError, match=message) as refused:
        AiInfnStorage(config=config)
    assert key in str(refused.value)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"gid_min": 150000, "gid_max": 250000}, "must not overlap"),
        ({"uid_min": 5000, "uid_max": 4000}, "must not exceed"),
        (
            {"bucket_mount_path": "/home/jovyan/bucket"},
            "home_mount_path: '/home/jovyan' overlaps bucket_mount_path",
        ),
        ({"scratch_mount_path": "/dev/shm"}, "overlaps shm"),
        ({"public_mount_path": "/home/shared"}, "overlaps projects_mount_root"),
    ],
)
def test_settings_that_conflict_are_refused(values, message):
    config = Config()
    for key, value in values.items():
        config.AiInfnStorage[key] = value
    with pytest.raises(TraitError, match=message):
        AiInfnStorage(config=config).settings()


def test_catalog_sizes_carry_scratch_and_shm():
    document = yaml.safe_load(catalog.default_path().read_text())
    sizes = catalog.parse(document).sizes
    assert sizes["gpu"]["medium"] == catalog.Size(
        "medium", "8 CPU / 32 GB", "8", "32Gi", "100Gi", "8Gi"
    )
    assert sizes["cpu"]["small"].scratch == "" and sizes["cpu"]["small"].shm == ""
    too_much = copy.deepcopy(document)
    too_much["sizes"]["cpu"]["choices"]["small"]["shm"] = "9Gi"
    with pytest.raises(
        catalog.CatalogError, match=r"sizes\.cpu\.choices\.small\.shm: must not exceed memory"
    ):
        catalog.parse(too_much)
    bad = copy.deepcopy(document)
    bad["sizes"]["cpu"]["choices"]["small"]["scratch"] = "fast"
    with pytest.raises(
        catalog.CatalogError, match=r"sizes\.cpu\.choices\.small\.scratch: must be a Kubernetes"
    ):
        catalog.parse(bad)


def test_a_bad_storage_config_stops_the_hub_naming_the_key():
    config = Config()
    config.AiInfnStorage.gid_min = 100
    with pytest.raises(SystemExit, match="invalid storage configuration: AiInfnStorage.gid_min"):
        storage_config.check_config(config)
    with pytest.raises(SystemExit, match="invalid storage configuration"):
        hubstate.check_config(config)
    storage_config.check_config(Config())


def test_init_script_has_nothing_kubespawner_would_expand():
    assert "{" not in volumes.INIT_SCRIPT and "}" not in volumes.INIT_SCRIPT
