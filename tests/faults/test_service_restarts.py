"""Fault drills: the accounting database, the job service and the backup service killed (SIGKILL,
by pid) mid-operation and restarted, beside a real hub on the dev cluster (shipped
ServiceAccounts and RBAC, real Kueue, real borg in the pod runner, a real PostgreSQL of the
module's own, killed with its whole process group as in a crash).

What is already drilled elsewhere is not repeated: the ledger writer alone across a database
outage (tests/accounting/test_outage.py), the job service killed before and after it created a
Job and its sandboxes reused or swept (tests/integration/test_jobs_service.py), a killed backup
run recorded as a failure (tests/integration/test_backup_schedule.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from aiinfn_dev.devcluster.processes import free_port
from kubernetes_asyncio import client

# ruff: noqa: E402 (the imports below need psycopg)
psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (docs/accounting.md)")

from aiinfn_hub import labels
from aiinfn_hub.accounting import settings
from aiinfn_hub.identity import IdentityStore
from tests import backup_cluster, service_process
from tests import postgres as pg
from tests.accounting.test_hub import as_recorded, finished_pod, job, job_pod, pod_seconds, rows
from tests.accounting.test_hub_off import scrape
from tests.helpers import wait_until
from tests.hub import Hub, hub_in_namespace
from tests.jobs_service import Service, hub_lines, submit_through_hub

pytestmark = pytest.mark.integration

USERS = {"alice": {"groups": ["cms-ml"]}, "ada": {"admin": True, "groups": []}}
SPAWNER = {
    "default_policy": {"accelerators": ["cpu"], "environments": "*"},
    "group_policies": {"cms-ml": {"accelerators": "*", "environments": "*", "max_accelerators": 4}},
}


@pytest.fixture(scope="module")
def database() -> Iterator[pg.Postgres]:
    """A PostgreSQL of this module's own, to kill."""
    server = pg.start(pg.initdb())
    try:
        yield server
    finally:
        pg.remove(server)


def crash(server: pg.Postgres) -> None:
    """SIGKILL the server's whole process group (postmaster and backends), as a crash would."""
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait()


@dataclass
class Env:
    hub: Hub
    jobs: Service
    dsn: str
    tmp: Path
    backup_port: int  # the backup service is registered in the hub; `backup` starts it
    backup_token: str


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env(devcluster, api_client, kueue, database, tmp_path_factory):
    kubeconfig, _ = devcluster
    name = pg.create_database(database)
    tmp = tmp_path_factory.mktemp("service-restarts")
    port, token = free_port(), secrets.token_hex(32)
    backup_port, backup_token = free_port(), secrets.token_hex(32)
    backup_lines = [  # the jobs lines made the public URL and the users' role: add to that
        line
        for line in backup_cluster.hub_lines(backup_port, backup_token)
        if "public_url" not in line and "load_roles" not in line
    ]
    lines = [
        *hub_lines(port, token),
        *backup_lines,
        "c.JupyterHub.load_roles[-1]['scopes'].append('access:services!service=backup')",
    ]
    async with hub_in_namespace(
        api_client,
        kubeconfig,
        tmp,
        USERS,
        SPAWNER,
        lines,
        {settings.URL_ENV: database.url(name)},
        kueue_documents=kueue,
    ) as hub:
        service = Service(tmp, hub, port, token)
        await asyncio.to_thread(service.start)
        try:
            yield Env(hub, service, database.dsn(name), tmp, backup_port, backup_token)
        finally:
            service.stop()


def metric(text: str, name: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(f"{name} "))
    return float(line.split()[1])


async def test_the_database_killed_mid_allocation_loses_and_doubles_nothing(
    env, database, core, batch
):
    """One GPU pod starts before the crash and ends during it, another lives wholly inside it:
    after the restart the ledger holds each start and end once, to the pods' own seconds."""
    hub, dsn = env.hub, env.dsn
    before, during = f"db-before-{uuid.uuid4().hex[:6]}", f"db-during-{uuid.uuid4().hex[:6]}"
    # Long enough for its start to be written before the crash, so that it ends during it.
    await batch.create_namespaced_job(hub.namespace, job(before, "15s"))
    first = await wait_until(lambda: job_pod(core, hub.namespace, before), "the first pod")

    async def started():
        return "start" in await rows(dsn, first.metadata.uid)

    await wait_until(started, "the first pod's start in the ledger")
    crash(database)
    try:
        await batch.create_namespaced_job(hub.namespace, job(during, "3s"))
        pods = [
            await finished_pod(core, hub.namespace, name) for name in (before, during)
        ]  # both end while the database is down

        async def queued() -> bool:
            text = await asyncio.to_thread(scrape, hub)
            return metric(text, "aiinfn_accounting_queued_events") >= 3

        await wait_until(queued, "the hub to keep the events it could not write")
    finally:
        pg.start(database)
    for pod in pods:

        async def recorded(pod=pod):
            found = await rows(dsn, pod.metadata.uid)
            return found if set(found) == {"start", "end"} else None

        found = await wait_until(recorded, f"{pod.metadata.name} in the ledger", limit=120)
        assert as_recorded(found, pod), (found, pod_seconds(pod))
    async with await psycopg.AsyncConnection.connect(dsn) as connection:
        cursor = await connection.execute(
            "SELECT allocation, count(*) FROM accounting_events GROUP BY allocation"
        )
        counts = dict(await cursor.fetchall())
    assert [counts[p.metadata.uid] for p in pods] == [2, 2]
    text = await asyncio.to_thread(scrape, hub)
    assert metric(text, "aiinfn_accounting_dropped_events_total") == 0
    assert hub.process.poll() is None  # the hub rode the outage out


async def job_names(batch, namespace: str) -> set[str]:
    return {j.metadata.name for j in (await batch.list_namespaced_job(namespace)).items}


async def test_the_job_service_killed_mid_submission_loses_and_duplicates_nothing(env, batch):
    """Killed the moment a submission's Job exists (its answer may be lost): the client's retry
    with the same idempotency key after the restart yields that Job, never a second; a
    submission answered before the kill is answered the same after it."""
    hub, service = env.hub, env.jobs
    status, answer = await asyncio.to_thread(
        hub.request, "POST", "/users/alice/tokens", {"note": "service drill"}
    )
    assert status == 201, answer
    token = answer["token"]
    body = {"name": "drill", "command": ["python", "-c", "print(1)"], "idempotency_key": "d-1"}
    status, made = await asyncio.to_thread(submit_through_hub, hub, token, body)
    assert status == 201, made
    jobs = await job_names(batch, hub.namespace)

    flying = {**body, "name": "in-flight", "idempotency_key": "d-2"}
    request = asyncio.ensure_future(asyncio.to_thread(submit_through_hub, hub, token, flying))

    async def job_made() -> bool:
        return bool(await job_names(batch, hub.namespace) - jobs)

    await wait_until(job_made, "the in-flight submission's Job")
    service.stop(signal.SIGKILL)  # the Job is made; its answer may or may not have left
    await request
    await asyncio.to_thread(service.start)
    status, retried = await asyncio.to_thread(submit_through_hub, hub, token, flying)
    assert status in (200, 201), retried
    assert await job_names(batch, hub.namespace) - jobs == {retried["id"]}
    status, again = await asyncio.to_thread(submit_through_hub, hub, token, body)
    assert (status, again["id"]) == (200, made["id"])


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def backup(devcluster, api_client, env):
    """The backup service (its own shipped account) beside the hub, alice's home to back up,
    and ada's (an admin's) hub token; skipped where the pod runner cannot play borg."""
    world = backup_cluster.world_in(devcluster, env.hub.namespace, env.hub.storage_folders)
    outside = world.target.parent / "elsewhere"
    outside.mkdir()
    uid = (await IdentityStore(api_client, env.hub.namespace).identity("alice")).uid
    backup_cluster.make_home(world, "alice", uid, outside)
    account = await backup_cluster.service_kubeconfig(
        api_client, env.hub.namespace, devcluster[0], env.tmp / "backup-service.kubeconfig"
    )
    service = backup_cluster.ServiceProcess(
        env.tmp, env.hub.url, env.backup_port, env.backup_token, account
    )
    status, answer = await asyncio.to_thread(
        env.hub.request, "POST", "/users/ada/tokens", {"note": "backup drill"}
    )
    assert status == 201, answer
    await asyncio.to_thread(service.start)
    try:
        yield service, answer["token"]
    finally:
        service.stop()


def backup_call(env: Env, token: str, method: str, path: str, body=None) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{env.hub.url}{backup_cluster.PREFIX}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Authorization": f"token {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


async def alices_record(api_client, namespace: str) -> dict:
    core = client.CoreV1Api(api_client)
    try:
        found = await core.read_namespaced_config_map("aiinfn-backup-records", namespace)
    except client.ApiException as error:
        if error.status == 404:
            return {}
        raise
    return json.loads((found.data or {}).get("home-alice", "{}"))


async def run_with_the_service_killed(env, backup, api_client, kill_pod: bool) -> str:
    """Start a backup of alice's home, SIGKILL the service once the run's pod exists (and, if
    `kill_pod`, delete that pod), wait for the Job to end while the service is down, and start
    the service again; the run's id."""
    service, token = backup
    status, run = await asyncio.to_thread(
        backup_call, env, token, "POST", "api/backups", {"kind": "home", "name": "alice"}
    )
    assert status == 202, run
    core, batch = client.CoreV1Api(api_client), client.BatchV1Api(api_client)

    async def pod() -> str | None:
        selector = f"{labels.JOB_NAME}={run['id']}"
        found = await core.list_namespaced_pod(env.hub.namespace, label_selector=selector)
        return found.items[0].metadata.name if found.items else None

    name = await wait_until(pod, "the backup run's pod", limit=backup_cluster.JOB_LIMIT)
    service_process.stop(service.process, signal.SIGKILL)
    if kill_pod:
        await core.delete_namespaced_pod(name, env.hub.namespace, grace_period_seconds=0)
    before = await alices_record(api_client, env.hub.namespace)
    outcome = await wait_until(
        lambda: backup_cluster.job_outcome(batch, env.hub.namespace, run["id"]),
        "the run to end while the service is down",
        limit=backup_cluster.JOB_LIMIT,
    )
    assert outcome == ("Failed" if kill_pod else "Complete"), outcome
    assert await alices_record(api_client, env.hub.namespace) == before  # nobody recorded it
    await asyncio.to_thread(service.start)
    return run["id"]


async def test_the_backup_service_killed_mid_run_records_only_what_happened(
    env, backup, api_client
):
    """A run that succeeded while the service was down is recorded as a success once it is
    back; one whose pod died meanwhile is recorded as a failure, and the last success stays
    the one before it."""
    run = await run_with_the_service_killed(env, backup, api_client, kill_pod=False)

    async def recorded(key: str):
        record = await alices_record(api_client, env.hub.namespace)
        return record if record.get(key) else None

    good = await wait_until(lambda: recorded("last_success"), "the success recorded", limit=120)
    assert good["attempts"] == 0 and good["last_archive_size"] > 0, good
    status, shown = await asyncio.to_thread(backup_call, env, backup[1], "GET", f"api/runs/{run}")
    assert (status, shown["state"]) == (200, "succeeded"), shown

    failed = await run_with_the_service_killed(env, backup, api_client, kill_pod=True)
    bad = await wait_until(lambda: recorded("last_failure"), "the failure recorded", limit=120)
    assert bad["last_success"] == good["last_success"], bad  # a killed run is never a success
    assert failed in bad["last_error"], bad
