"""The backup service's scheduler on a real dev cluster, behind a real hub: with a schedule due
now and one Job at a time it backs up two homes one after the other (prune and compact
included) and records each success with its sizes; a run that meets the lock a killed run left
is recorded as a failure, and the scheduler's next run, after the stale-lock rule broke that
dead pod's lock, succeeds; a run killed as it starts is a failure and the next run succeeds.
The records reach admins (only) through the API and Prometheus."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiinfn_dev.devcluster.processes import free_port
from kubernetes_asyncio import client

from aiinfn_hub import labels
from aiinfn_hub.identity import IdentityStore
from aiinfn_hub.services.backup import locks, repos
from aiinfn_hub.services.backup import records as borg_records
from tests import backup_cluster
from tests.backup_cluster import PREFIX, BackupWorld
from tests.helpers import wait_until
from tests.hub import Hub, hub_in_namespace

pytestmark = pytest.mark.integration

USERS = {
    "alice": {"groups": []},
    "bob": {"groups": []},
    "ada": {"admin": True, "groups": []},
}
RECORDS = "aiinfn-backup-records"
LIMIT = 4 * backup_cluster.JOB_LIMIT


@dataclass
class Env:
    hub: Hub
    world: BackupWorld
    service: backup_cluster.ServiceProcess
    uids: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    most_running: int = 0

    def call(self, user: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.hub.url}{PREFIX}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {self.tokens[user]}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                raw = response.read()
                kind = response.headers.get("Content-Type", "")
                return response.status, json.loads(raw) if "json" in kind else raw.decode()
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env(devcluster, api_client, tmp_path_factory):
    backup_cluster.require_backup_runner(devcluster)
    kubeconfig, _ = devcluster
    tmp = tmp_path_factory.mktemp("backup-schedule")
    port, token = free_port(), secrets.token_hex(32)
    lines = backup_cluster.hub_lines(
        port,
        token,
        job_resources={"cpu": "100m", "memory": "256Mi"},
        schedule="00:00",  # every day from midnight, caught up: due as the service starts
        catch_up=True,
        max_concurrent_backups=1,
        backup_retry_delay=0.0,
        check_every_days=0,
        schedule_interval=1.0,
    )
    async with hub_in_namespace(api_client, kubeconfig, tmp, USERS, {}, lines) as hub:
        world = backup_cluster.world_in(devcluster, hub.namespace, hub.storage_folders)
        outside = world.target.parent / "elsewhere"
        outside.mkdir()
        identities = IdentityStore(api_client, hub.namespace)
        uids = {}
        for user in ("alice", "bob"):  # homes first: the scheduler backs up who has a record
            uids[user] = (await identities.identity(user)).uid
            backup_cluster.make_home(world, user, uids[user], outside)
        account = await backup_cluster.service_kubeconfig(
            api_client, hub.namespace, kubeconfig, tmp / "backup-service.kubeconfig"
        )
        service = backup_cluster.ServiceProcess(tmp, hub.url, port, token, account)
        try:
            await asyncio.to_thread(service.start)
            environment = Env(hub, world, service, uids)
            for user in USERS:
                status, body = await asyncio.to_thread(
                    hub.request, "POST", f"/users/{user}/tokens", {"note": "backup tests"}
                )
                assert status == 201, body
                environment.tokens[user] = body["token"]
            yield environment
        finally:
            service.stop()


async def records(env: Env, api_client) -> dict[str, dict]:
    """The records ConfigMap as the service wrote it (and counts the backup Jobs running)."""
    core, batch = client.CoreV1Api(api_client), client.BatchV1Api(api_client)
    jobs = await batch.list_namespaced_job(
        env.hub.namespace, label_selector=f"{labels.COMPONENT}=backup"
    )
    running = [j for j in jobs.items if not j.status.succeeded and not j.status.failed]
    env.most_running = max(env.most_running, len(running))
    try:
        found = await core.read_namespaced_config_map(RECORDS, env.hub.namespace)
    except client.ApiException as error:
        if error.status == 404:
            return {}
        raise
    return {key: json.loads(text) for key, text in (found.data or {}).items()}


def when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


async def test_two_homes_one_after_the_other_then_a_failure_and_a_recovery(env: Env, api_client):
    async def both_backed_up() -> dict | None:
        found = await records(env, api_client)
        done = all((found.get(f"home-{u}") or {}).get("last_success") for u in ("alice", "bob"))
        return found if done else None

    found = await wait_until(both_backed_up, "both homes backed up", limit=LIMIT)
    assert env.most_running <= 1, "the concurrency limit is 1"
    alice, bob = found["home-alice"], found["home-bob"]
    for record in (alice, bob):
        assert record["last_failure"] is None and record["attempts"] == 0, record
        assert record["archives"] == 1  # prune ran: one archive a day
        assert record["last_archive_size"] > 200_000  # work/data.bin is 200 kB
        assert record["stored_size"] > 0 and record["dedup_ratio"] > 0

    # A killed run's lock, as borg leaves it (tests/integration/test_backup_borg.py): a pod
    # that no longer exists holds alice's repository.
    repository = env.world.repository(repos.home("alice"))
    dead = "backup-home-000000000000-dead"
    held = repository / locks.EXCLUSIVE
    held.mkdir()
    (held / f"{locks.host_id(dead)}.4242-1").touch()
    roster = repository / locks.ROSTER
    roster.write_text(json.dumps({"exclusive": [[locks.host_id(dead), 4242, 1]]}))
    for path in (held, held / f"{locks.host_id(dead)}.4242-1", roster):
        os.chown(path, env.uids["alice"], env.uids["alice"])

    # An admin's backup now meets that lock: recorded as a failure, never a success.
    status, run = await asyncio.to_thread(
        env.call, "ada", "POST", "api/backups", {"kind": "home", "name": "alice"}
    )
    assert status == 202, run

    async def failed() -> dict | None:
        record = (await records(env, api_client)).get("home-alice") or {}
        return record if record.get("last_failure") else None

    record = await wait_until(failed, "the locked run recorded", limit=LIMIT)
    assert when(record["last_failure"]) > when(alice["last_success"]), record
    assert record["last_success"] == alice["last_success"], "a failure is never a success"
    assert "lock" in record["last_error"].lower(), record["last_error"]

    # The scheduler tries again: the lock's holder is provably gone, so it is broken first.
    async def recovered() -> dict | None:
        record = (await records(env, api_client)).get("home-alice") or {}
        success, failure = when(record.get("last_success")), when(record.get("last_failure"))
        return record if success and failure and success > failure else None

    record = await wait_until(recovered, "the next run succeeding", limit=LIMIT)
    # Prune keeps this run's archive as the day's and the first as the week's (a borg rule
    # skips what an earlier rule kept).
    assert record["attempts"] == 0 and record["archives"] == 2, record
    assert not locks.read(Path(repository)).present
    assert f"held by pod {dead}, which no longer runs" in env.service.log()


async def test_admins_read_the_records_and_metrics_users_do_not(env: Env, api_client):
    async def alice_recorded() -> dict | None:
        return (await records(env, api_client)).get("home-alice")

    await wait_until(alice_recorded, "alice's record", limit=LIMIT)
    status, body = await asyncio.to_thread(env.call, "ada", "GET", "api/records")
    assert status == 200, body
    shown = {r["key"]: r for r in body["repositories"]}
    assert shown["home-alice"]["kind"] == "home" and shown["home-alice"]["name"] == "alice"
    assert "last_run" not in shown["home-alice"]
    status, body = await asyncio.to_thread(env.call, "alice", "GET", "api/records")
    assert status == 403, body

    status, text = await asyncio.to_thread(env.call, "ada", "GET", "metrics")
    assert status == 200, text
    assert 'aiinfn_backup_last_success_timestamp_seconds{kind="home",name="alice"}' in text
    assert 'aiinfn_backup_stored_bytes{kind="home",name="bob"}' in text
    status, _ = await asyncio.to_thread(env.call, "alice", "GET", "metrics")
    assert status == 403


async def _kill_when_it_starts(api_client, namespace: str, job: str) -> None:
    """Delete the run's pod as soon as it exists (a kubelet then stops it: SIGTERM, exit 143)."""
    core, batch = client.CoreV1Api(api_client), client.BatchV1Api(api_client)

    async def pod() -> str | None:
        selector = f"{labels.JOB_NAME}={job}"
        found = await core.list_namespaced_pod(namespace, label_selector=selector)
        return found.items[0].metadata.name if found.items else None

    name = await wait_until(pod, f"the pod of {job}", limit=backup_cluster.JOB_LIMIT)
    status = (await batch.read_namespaced_job(job, namespace)).status
    assert not status.succeeded, "the run ended before it could be killed"
    await core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)


async def test_a_killed_run_is_a_failure_and_the_next_run_succeeds(env: Env, api_client):
    async def bob_backed_up() -> dict | None:
        return ((await records(env, api_client)).get("home-bob") or {}).get("last_success")

    before = when(await wait_until(bob_backed_up, "bob's first backup", limit=LIMIT))
    home = env.world.home("bob")
    (home / "big.bin").write_bytes(secrets.token_bytes(64 * 1024 * 1024))  # a longer run
    os.chown(home / "big.bin", env.uids["bob"], env.uids["bob"])

    status, run = await asyncio.to_thread(
        env.call, "ada", "POST", "api/backups", {"kind": "home", "name": "bob"}
    )
    assert status == 202, run
    await _kill_when_it_starts(api_client, env.hub.namespace, run["id"])

    async def failed() -> dict | None:
        record = (await records(env, api_client)).get("home-bob") or {}
        return record if record.get("last_failure") else None

    record = await wait_until(failed, "the killed run recorded", limit=LIMIT)
    assert when(record["last_success"]) == before, "a killed run is never a success"
    assert run["id"] in record["last_error"], record["last_error"]
    status, shown = await asyncio.to_thread(env.call, "ada", "GET", f"api/runs/{run['id']}")
    assert (status, shown["state"]) == (200, "failed"), shown

    async def recovered() -> dict | None:
        record = (await records(env, api_client)).get("home-bob") or {}
        success, failure = when(record.get("last_success")), when(record.get("last_failure"))
        return record if success and failure and success > failure else None

    record = await wait_until(recovered, "the next run succeeding", limit=LIMIT)
    assert record["attempts"] == 0 and record["last_archive_size"] > 64 * 1024 * 1024, record


async def test_projects_no_member_has_used_are_skipped_and_no_folder_is_made(env: Env, api_client):
    """The scheduler backs up every catalog project; none has a folder yet (no member has had a
    server): each run succeeds with "nothing to back up: folder missing", makes no archive, and
    leaves the project's claim as it was (a root-owned folder would stop members' servers)."""
    claims = env.world.projects
    before = {slug: sorted(p.name for p in folder.iterdir()) for slug, folder in claims.items()}

    async def all_skipped() -> dict | None:
        found = await records(env, api_client)
        done = {
            r["name"]: r for r in found.values() if r["kind"] == "project" and r["last_success"]
        }
        return done if len(done) == len(claims) else None

    found = await wait_until(all_skipped, "every project's scheduled run", limit=2 * LIMIT)
    for name, record in found.items():
        assert record["last_outcome"] == borg_records.SKIPPED, record
        assert record["archives"] == 0 and record["last_archive_size"] is None, record
        assert record["last_failure"] is None, record
        slug = repos.project(name).slug
        assert sorted(p.name for p in claims[slug].iterdir()) == before[slug], "nothing made"
