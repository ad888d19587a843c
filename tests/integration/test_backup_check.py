"""`borg check` through the backup service's scheduler on a real dev cluster: after the day's
backup the scheduler starts a check Job (real borg, as the home's owner) and records that it
passed; with the repository's segment data damaged on disk, the next check fails and the
repository's record and metrics say so (an error, never a passed check)."""

from __future__ import annotations

import asyncio
import json
import secrets
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import pytest_asyncio
from aiinfn_dev.devcluster.processes import free_port
from kubernetes_asyncio import client

from aiinfn_hub import labels
from aiinfn_hub.identity import IdentityStore
from aiinfn_hub.services.backup import manifests, repos
from tests import backup_cluster
from tests.backup_cluster import PREFIX
from tests.helpers import wait_until
from tests.hub import hub_in_namespace

pytestmark = pytest.mark.integration

USERS = {"alice": {"groups": []}, "ada": {"admin": True, "groups": []}}
RECORDS = "aiinfn-backup-records"
LIMIT = 4 * backup_cluster.JOB_LIMIT


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env(devcluster, api_client, tmp_path_factory):
    backup_cluster.require_backup_runner(devcluster)
    kubeconfig, _ = devcluster
    tmp = tmp_path_factory.mktemp("backup-check")
    port, token = free_port(), secrets.token_hex(32)
    lines = backup_cluster.hub_lines(
        port,
        token,
        job_resources={"cpu": "100m", "memory": "256Mi"},
        schedule="00:00",
        catch_up=True,
        max_concurrent_backups=1,
        check_every_days=1,  # a check each day, after that day's backup
        schedule_interval=1.0,
    )
    async with hub_in_namespace(api_client, kubeconfig, tmp, USERS, {}, lines) as hub:
        world = backup_cluster.world_in(devcluster, hub.namespace, hub.storage_folders)
        outside = world.target.parent / "elsewhere"
        outside.mkdir()
        uid = (await IdentityStore(api_client, hub.namespace).identity("alice")).uid
        backup_cluster.make_home(world, "alice", uid, outside)
        account = await backup_cluster.service_kubeconfig(
            api_client, hub.namespace, kubeconfig, tmp / "backup-service.kubeconfig"
        )
        service = backup_cluster.ServiceProcess(tmp, hub.url, port, token, account)
        try:
            await asyncio.to_thread(service.start)
            status, body = await asyncio.to_thread(
                hub.request, "POST", "/users/ada/tokens", {"note": "backup tests"}
            )
            assert status == 201, body
            yield hub, world, service, body["token"]
        finally:
            service.stop()


async def alice_record(api_client, namespace: str) -> dict:
    core = client.CoreV1Api(api_client)
    try:
        found = await core.read_namespaced_config_map(RECORDS, namespace)
    except client.ApiException as error:
        if error.status == 404:
            return {}
        raise
    return json.loads((found.data or {}).get("home-alice", "{}"))


async def forget_the_check(api_client, namespace: str) -> bool:
    """As if days had passed: the record's last check cleared (at the version read; False when
    the scheduler wrote meanwhile)."""
    core = client.CoreV1Api(api_client)
    found = await core.read_namespaced_config_map(RECORDS, namespace)
    record = json.loads(found.data["home-alice"])
    record.update(last_check=None, last_check_ok=None)
    found.data["home-alice"] = json.dumps(record, sort_keys=True)
    try:
        await core.replace_namespaced_config_map(RECORDS, namespace, found)
    except client.ApiException as error:
        if error.status == 409:
            return False
        raise
    return True


def damage(repository: Path) -> Path:
    """64 bytes of the repository's largest segment file zeroed, in its middle."""
    segments = [p for p in (repository / "data").rglob("*") if p.is_file()]
    segment = max(segments, key=lambda p: p.stat().st_size)
    with segment.open("r+b") as handle:
        handle.seek(segment.stat().st_size // 2)
        handle.write(b"\0" * 64)
    return segment


def metrics(hub_url: str, token: str) -> str:
    request = urllib.request.Request(
        f"{hub_url}{PREFIX}metrics", headers={"Authorization": f"token {token}"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.read().decode()


async def test_the_scheduler_checks_a_repository_and_reports_a_damaged_one(env, api_client):
    hub, world, service, token = env
    namespace = hub.namespace

    async def checked() -> dict | None:
        record = await alice_record(api_client, namespace)
        return record if record.get("last_check_ok") is not None else None

    record = await wait_until(checked, "alice's first check", limit=LIMIT)
    assert record["last_check_ok"] is True and record["last_success"], record
    assert record["last_check"] >= record["last_success"], "the check follows the backup"
    # A real check Job ran borg check on alice's repository, as alice.
    batch = client.BatchV1Api(api_client)
    jobs = await batch.list_namespaced_job(
        namespace, label_selector=f"{labels.COMPONENT}={manifests.CHECK_COMPONENT}"
    )
    (job,) = [j for j in jobs.items if j.metadata.name.startswith("check-home-")]
    spec = job.spec.template.spec
    assert spec.containers[0].command[:2] == ["borg", "check"]
    assert spec.security_context.run_as_user == record_uid(world)
    text = await asyncio.to_thread(metrics, hub.url, token)
    assert 'aiinfn_backup_last_check_success{kind="home",name="alice"} 1.0' in text

    damage(world.repository(repos.home("alice")))
    await wait_until(
        lambda: forget_the_check(api_client, namespace), "the record's check cleared", limit=60
    )

    async def failed() -> dict | None:
        record = await alice_record(api_client, namespace)
        return record if record.get("last_check_ok") is False else None

    record = await wait_until(failed, "the damaged repository's check", limit=LIMIT)
    assert record["last_failure"] == record["last_check"], record
    error = record["last_error"]
    assert error.startswith("check check-home-") and "exited 1 (damage found)" in error, error
    assert "errors found" in error, error  # borg's last words, kept
    text = await asyncio.to_thread(metrics, hub.url, token)
    assert 'aiinfn_backup_last_check_success{kind="home",name="alice"} 0.0' in text
    assert 'aiinfn_backup_last_failure_timestamp_seconds{kind="home",name="alice"}' in text


def record_uid(world) -> int:
    return world.home("alice").stat().st_uid
