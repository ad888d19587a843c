"""GPU-hour quotas in the job service (a real hub, the service as its own process, Kueue, a real
PostgreSQL): a job of a project whose A100-hours are used up is refused (403) with the figures
and nothing is made; a job on another accelerator is not held back by that quota.

The project cms-ml used two A100-hours this month (events written to the ledger before the hub
starts); its quota is what it used. The service reads the ledger's URL from the hub's
configuration here (c.AiInfnAccounting.database_url); under z2jh it gets it from the hub's
environment (40-jobs.py; tests/accounting/test_quotas_settings.py).
"""

from __future__ import annotations

import asyncio
import math
import secrets
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio

# ruff: noqa: E402 (the imports below need psycopg)
psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (docs/accounting.md)")

from aiinfn_dev.devcluster.processes import free_port
from psycopg import AsyncConnection

from aiinfn_hub import labels
from aiinfn_hub.accounting import ledger
from aiinfn_hub.accounting.events import Allocation, AllocationEvent
from aiinfn_hub.accounting.quotas import period_bounds
from tests.hub import hub_in_namespace
from tests.integration.test_jobs_service import Env, job_body, user_token
from tests.jobs_service import Service, hub_lines
from tests.postgres import Postgres, create_database

pytestmark = pytest.mark.integration

USERS = {"alice": {"groups": ["cms-ml"]}}
SPAWNER = {
    "default_policy": {"accelerators": ["cpu"], "environments": "*"},
    "group_policies": {
        "cms-ml": {"accelerators": "*", "environments": "*", "max_accelerators": 2},
    },
}
JOB_LABELS = f"{labels.MANAGED_BY}={labels.MANAGED_BY_VALUE},{labels.COMPONENT}=batch-job"


async def used_two_hours(dsn: str) -> float:
    """Write a cms-ml job's two A100s for an hour (ended a minute ago); its hours this month."""
    now = datetime.now(UTC).replace(microsecond=0)
    start, end = now - timedelta(minutes=61), now - timedelta(minutes=1)
    held = Allocation("quota-a100-1", "bob", "cms-ml", "a100", "batch", "", 2, 1000)
    async with await AsyncConnection.connect(dsn) as connection:
        await ledger.insert(
            connection, [AllocationEvent(held, "start", start), AllocationEvent(held, "end", end)]
        )
        await connection.commit()
    since = max(start, period_bounds("month", now)[0])
    return max(0.0, 2 * (end - since).total_seconds() / 3600)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env(devcluster, api_client, kueue, postgres: Postgres, tmp_path_factory):
    kubeconfig, _ = devcluster
    name = create_database(postgres)
    ledger.upgrade(postgres.url(name))
    used = await used_two_hours(postgres.dsn(name))
    quotas = {
        "cms-a100": {"scope": "project", "subject": "cms-ml", "model": "a100",
                     "period": "month", "hours": used},
    }  # fmt: skip
    tmp = tmp_path_factory.mktemp("quota-jobs")
    port, token = free_port(), secrets.token_hex(32)
    lines = [
        *hub_lines(port, token),
        f"c.AiInfnAccounting.database_url = {postgres.url(name)!r}",
        f"c.AiInfnAccounting.quotas = {quotas!r}",
    ]
    async with hub_in_namespace(
        api_client, kubeconfig, tmp, USERS, SPAWNER, lines, kueue_documents=kueue
    ) as hub:
        service = Service(tmp, hub, port, token)
        try:
            await asyncio.to_thread(service.start)
            environment = Env(hub, service, hub.namespace)
            environment.tokens["alice"] = await user_token(hub, "alice")
            yield environment, used
        finally:
            service.stop()


async def test_a_job_over_its_projects_quota_is_refused_with_the_figures(env, batch):
    environment, used = env
    body = job_body(name="over", accelerator="a100", project="cms-ml")
    status, answer, _ = await environment.api("alice", "POST", "api/jobs", body)
    assert status == 403, answer
    shown = math.floor(used * 10) / 10
    assert answer["message"].startswith(
        f"project cms-ml has used {shown:.1f} of its {used:g} hours of "
    ), answer
    assert " this month (resets " in answer["message"]
    assert answer["message"].endswith("; new work is refused until then")
    jobs = await batch.list_namespaced_job(environment.namespace, label_selector=JOB_LABELS)
    assert jobs.items == []
    assert "postgresql://" not in environment.service.log()


async def test_a_job_on_another_accelerator_is_not_held_back(env, batch):
    environment, _ = env
    body = job_body(name="t4", accelerator="t4", project="cms-ml")
    status, answer, _ = await environment.api("alice", "POST", "api/jobs", body)
    assert status == 201, answer
    status, _, _ = await environment.api("alice", "DELETE", f"api/jobs/{answer['id']}")
    assert status in (200, 202, 204)
