"""The backup Jobs' world on the dev cluster, made as an installer would with the admin client:
the backup target is helm-values/storage.yaml's claim, which devstorage gives every test
namespace (a local folder standing for the Ceph volume, with the `homes` and `projects` folders
docs/backup.md asks for); the keys Secret, and users' homes with files. Shared by the backup
integration tests."""

from __future__ import annotations

import base64
import os
import secrets
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from aiinfn_dev import devstorage
from kubernetes_asyncio import client

from aiinfn_hub import names
from aiinfn_hub.services.backup import image, manifests, repos
from aiinfn_hub.storage_config import StorageSettings
from tests import service_process
from tests.helm_values import HELM_VALUES, objects
from tests.helpers import wait_until

JOB_LIMIT = 180.0
BACKUP_UID = 990


@dataclass
class BackupWorld:
    """One namespace's backup target, keys Secret and storage folders."""

    namespace: str
    target: Path
    homes: Path
    projects: dict[str, Path]
    passphrases: dict[str, str]
    settings: manifests.BackupSettings
    storage: StorageSettings

    def home(self, username: str) -> Path:
        return self.homes / names.slug(username)

    def repository(self, repository: repos.Repository) -> Path:
        return Path(repos.path_under(str(self.target), repository))


async def keys_secret(
    core: client.CoreV1Api, namespace: str, name: str, repositories: list[repos.Repository]
) -> dict[str, str]:
    """One random passphrase per repository, as the service writes them."""
    passphrases = {r.key: f"aiinfn {secrets.token_hex(24)}" for r in repositories}
    data = {key: base64.b64encode(value.encode()).decode() for key, value in passphrases.items()}
    body = {"metadata": {"name": name}, "type": "Opaque", "data": data}
    await core.create_namespaced_secret(namespace, body)
    return passphrases


def make_home(world: BackupWorld, username: str, uid: int, outside: Path) -> Path:
    """A user's home (0700, theirs): modes, a folder, a file named like an option, symlinks in
    and out, a cache borg skips."""
    home = world.home(username)
    (home / "work" / "deep").mkdir(parents=True)
    (home / "notebook.ipynb").write_text('{"cells": [], "metadata": {}}\n')
    (home / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (home / "run.sh").chmod(0o755)
    (home / "private.txt").write_text("mine\n")
    (home / "private.txt").chmod(0o600)
    (home / "-rf").write_text("a file named like an option\n")
    (home / "work" / "data.bin").write_bytes(secrets.token_bytes(200_000))
    (home / "work").chmod(0o750)
    (home / "work" / "deep" / "link-to-notebook").symlink_to("../../notebook.ipynb")
    (home / "outside-dir").symlink_to(outside)
    (home / "dangling").symlink_to("/nonexistent/target")
    (home / ".cache" / "pip").mkdir(parents=True)
    (home / ".cache" / "pip" / "wheel").write_bytes(b"cached")
    for path in [home, *home.rglob("*")]:
        os.chown(path, uid, uid, follow_symlinks=False)
    home.chmod(0o700)
    return home


def tree(root: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple]:
    """path -> (mode, owner, mtime, content or link target), never following links."""
    found: dict[str, tuple] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            relative = str(path.relative_to(root))
            if any(relative == s or relative.startswith(s + "/") for s in skip):
                continue
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                content: object = os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                content = path.read_bytes()
            else:
                content = None
            mtime = info.st_mtime_ns if not stat.S_ISDIR(info.st_mode) else None
            found[relative] = (info.st_mode, (info.st_uid, info.st_gid), mtime, content)
    return found


async def job_outcome(batch: client.BatchV1Api, namespace: str, name: str) -> str | None:
    """ "Complete" or "Failed" once the Job has that condition, else None."""
    job = await batch.read_namespaced_job_status(name, namespace)
    for condition in job.status.conditions or []:
        if condition.type in ("Complete", "Failed") and condition.status == "True":
            return condition.type
    return None


async def run_job(batch: client.BatchV1Api, namespace: str, body: dict) -> str:
    """Create a Job and wait for its outcome."""
    await batch.create_namespaced_job(namespace, body)
    name = body["metadata"]["name"]
    return await wait_until(
        lambda: job_outcome(batch, namespace, name), f"Job {name} to finish", limit=JOB_LIMIT
    )


async def pod_report(core: client.CoreV1Api, namespace: str, job: str) -> tuple[list, str]:
    """(each container's (name, exit code), the last container's log) of a Job's pod."""
    pods = await core.list_namespaced_pod(namespace, label_selector=f"job-name={job}")
    assert len(pods.items) == 1, [p.metadata.name for p in pods.items]
    pod = pods.items[0]
    statuses = [*(pod.status.init_container_statuses or []), *pod.status.container_statuses]
    codes = [
        (s.name, s.state.terminated.exit_code if s.state.terminated else None) for s in statuses
    ]
    container = pod.spec.containers[0].name
    log = await core.read_namespaced_pod_log(pod.metadata.name, namespace, container=container)
    return codes, log


def backup_settings() -> manifests.BackupSettings:
    """The Jobs' settings with small requests (the dev nodes' CPUs are scheduled, not used)."""
    return manifests.BackupSettings(image=image.IMAGE, resources={"cpu": "100m", "memory": "256Mi"})


def require_backup_runner(devcluster) -> None:
    """Skip unless the session cluster's pod runner plays the backup image (real borg)."""
    import pytest
    from aiinfn_dev.devcluster import podrunner

    _, cluster = devcluster
    if cluster is None:
        pytest.skip("the pod runner is part of the built dev cluster, not an AIINFN_KUBECONFIG one")
    config = cluster.layout.config("pod-runner.json")
    if "pod-runner" not in {p.name for p in cluster.status().processes} or not config.exists():
        pytest.skip(f"dev cluster {cluster.name!r} runs without the pod runner")
    if image.IMAGE not in podrunner.Settings.from_json(config.read_text()).images:
        pytest.skip(f"dev cluster {cluster.name!r} does not play the backup image (no borg?)")


SERVICE_ACCOUNT = "aiinfn-backup"
# What the backup service needs in its namespace (and nothing cluster-wide): the shipped Role's
# rules (helm-values/backup-service-rbac.yaml), so the tests run the service with exactly them.
SERVICE_RULES = next(
    d["rules"] for d in objects(HELM_VALUES / "backup-service-rbac.yaml") if d["kind"] == "Role"
)


def service_account_objects(namespace: str) -> list[dict]:
    """The backup service's ServiceAccount, Role and RoleBinding, as an installer makes them."""
    rbac = "rbac.authorization.k8s.io"
    meta = {"name": SERVICE_ACCOUNT, "namespace": namespace}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": f"{rbac}/v1", "kind": "Role", "metadata": meta, "rules": SERVICE_RULES},
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": rbac, "kind": "Role", "name": SERVICE_ACCOUNT},
            "subjects": [
                {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": namespace}
            ],
        },
    ]


async def service_kubeconfig(
    api_client: client.ApiClient, namespace: str, admin_kubeconfig: Path, path: Path
) -> Path:
    """Make the service's account (with the admin's client) and write a kubeconfig holding a
    token of it: the service itself never runs with admin credentials."""
    import yaml
    from aiinfn_dev import hubaccount

    for document in service_account_objects(namespace):
        await devstorage.apply(api_client, [document])
    answer = await client.CoreV1Api(api_client).create_namespaced_service_account_token(
        SERVICE_ACCOUNT, namespace, {"spec": {"audiences": [], "expirationSeconds": 3600}}
    )
    admin = yaml.safe_load(Path(admin_kubeconfig).read_text())
    config = hubaccount.kubeconfig_with_token(
        admin, answer.status.token, namespace, Path(admin_kubeconfig).resolve().parent
    )
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def world_in(devcluster, namespace: str, folders: dict[str, Path]) -> BackupWorld:
    """The backup world of a namespace whose storage (devstorage.setup, `folders` its claims'
    folders) includes the backup target claim, its `homes` and `projects` folders made; the
    keys Secret is left to the service (it adds each repository's passphrase)."""
    require_backup_runner(devcluster)
    settings = backup_settings()
    storage_settings = StorageSettings()
    prefix = f"{storage_settings.project_claim_prefix}-"
    projects = {
        claim.removeprefix(prefix): folder
        for claim, folder in folders.items()
        if claim.startswith(prefix)
    }
    homes = folders[storage_settings.home_claim]
    target = folders[settings.target_claim]
    return BackupWorld(namespace, target, homes, projects, {}, settings, storage_settings)


PREFIX = "/services/backup/"


def hub_lines(port: int, token: str, **settings: object) -> list[str]:
    """Hub config lines: the backup service as an external service, users allowed to reach it,
    and these c.AiInfnBackup settings (no schedule unless given: a test's Jobs are its own)."""
    settings = {"schedule": "", **settings}
    return [
        *service_process.external_service_lines("backup", port, token),
        *(f"c.AiInfnBackup.{name} = {value!r}" for name, value in settings.items()),
    ]


@dataclass
class ServiceProcess:
    """The backup service process, with the environment a hub gives a managed service and its
    own account's kubeconfig; stopped by pid."""

    tmp: Path
    hub_url: str
    port: int
    token: str
    kubeconfig: Path
    process: subprocess.Popen | None = None

    def environment(self) -> dict[str, str]:
        return service_process.environment(
            "backup", self.token, self.hub_url, self.port, PREFIX, KUBECONFIG=str(self.kubeconfig)
        )

    def answers(self) -> bool:
        return service_process.answers(self.port, PREFIX)

    def start(self) -> None:
        argv = [sys.executable, "-m", "aiinfn_hub.services.backup"]
        argv += ["--hub-config", str(self.tmp / "jupyterhub_config.py")]
        log = self.tmp / "backup-service.log"
        self.process = service_process.start(
            argv, self.tmp, self.environment(), log, self.port, PREFIX
        )

    def stop(self) -> None:
        service_process.stop(self.process)

    def log(self) -> str:
        return (self.tmp / "backup-service.log").read_text(errors="replace")
