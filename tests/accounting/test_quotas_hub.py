"""GPU-hour quotas in a real hub on the dev cluster (the shipped ServiceAccount and RBAC) with a
real PostgreSQL: the spawn form shows what is left of each quota on its accelerator's card, a
spawn on an accelerator whose quota is used up is refused (403) with the figures and creates
nothing, one with hours left is not held back by a quota; the database's password in no log.

alice used one T4-hour this month (events written to the ledger before the hub starts); her
quota on T4s is that hour, her quota on A100s 10 hours, none of it used.
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio

# ruff: noqa: E402 (the imports below need psycopg)
psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (docs/accounting.md)")

from psycopg import AsyncConnection

from aiinfn_hub.accounting import ledger
from aiinfn_hub.accounting.events import Allocation, AllocationEvent
from aiinfn_hub.accounting.quotas import period_bounds
from tests.accounting.test_hub import PASSWORD, environment
from tests.hub import KWOK_NOTEBOOKS, hub_in_namespace
from tests.integration.test_spawn import _form_action, _page
from tests.postgres import Postgres, create_database

pytestmark = pytest.mark.integration


async def used_one_hour(dsn: str) -> float:
    """Write alice's T4 hour (ended a minute ago); the hours of it inside this month."""
    now = datetime.now(UTC).replace(microsecond=0)
    start, end = now - timedelta(minutes=61), now - timedelta(minutes=1)
    held = Allocation("quota-t4-1", "alice", "", "t4", "notebook", "", 1, 1000)
    async with await AsyncConnection.connect(dsn) as connection:
        await ledger.insert(
            connection, [AllocationEvent(held, "start", start), AllocationEvent(held, "end", end)]
        )
        await connection.commit()
    since = max(start, period_bounds("month", now)[0])
    return max(0.0, (end - since).total_seconds() / 3600)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def quota_hub(devcluster, api_client, postgres: Postgres, tmp_path_factory):
    kubeconfig, _ = devcluster
    name = create_database(postgres)
    ledger.upgrade(postgres.url(name))
    dsn, env = environment(postgres, name)
    used = await used_one_hour(dsn)
    quotas = {
        "alice-t4": {"scope": "user", "subject": "alice", "model": "t4", "period": "month",
                     "hours": used},
        "users-a100": {"scope": "user", "model": "a100", "period": "week", "hours": 10},
    }  # fmt: skip
    folder = tmp_path_factory.mktemp("quota-hub")
    async with hub_in_namespace(
        api_client,
        kubeconfig,
        folder,
        {"alice": {"groups": []}},
        {},
        [f"c.AiInfnAccounting.quotas = {quotas!r}", *KWOK_NOTEBOOKS],
        env,
    ) as running:
        yield running, used


async def test_the_form_shows_what_is_left_of_each_quota(quota_hub):
    hub, used = quota_hub
    status, html = await asyncio.to_thread(hub.page, "/hub/spawn", "alice")
    assert status == 200, html[:500]
    a100 = html.split('data-accelerator="a100"', 1)[1].split('class="aiinfn-choice', 1)[0]
    assert 'class="aiinfn-quota" data-remaining-hours="10.0">Quota: 10.0 of 10 hours of' in a100
    assert "left this week (resets " in a100
    t4 = html.split('data-accelerator="t4"', 1)[1].split('class="aiinfn-choice', 1)[0]
    shown = math.floor(used * 10) / 10
    assert (
        f'class="aiinfn-quota none" data-remaining-hours="0.0">Quota used up: you have used '
        f"{shown:.1f} of your {used:g} hours of " in t4
    )
    cpu = html.split('data-accelerator="cpu"', 1)[1].split('class="aiinfn-choice', 1)[0]
    assert "aiinfn-quota" not in cpu


async def test_a_spawn_over_quota_is_refused_with_the_figures(quota_hub, core):
    hub, used = quota_hub
    status, body = await asyncio.to_thread(
        hub.request, "POST", "/users/alice/servers/t4", {"accelerator": "t4"}
    )
    assert status == 403, body
    shown = math.floor(used * 10) / 10
    assert body["message"].startswith(f"you have used {shown:.1f} of your {used:g} hours of ")
    assert " this month (resets " in body["message"]
    assert body["message"].endswith("; new work is refused until then")
    pods = await core.list_namespaced_pod(hub.namespace)
    assert not [p.metadata.name for p in pods.items if "t4" in p.metadata.name]
    _, model = await asyncio.to_thread(hub.request, "GET", "/users/alice")
    assert "t4" not in model["servers"]
    assert PASSWORD not in hub.log()


async def test_the_spawn_forms_start_over_quota_shows_the_figures(quota_hub, core):
    hub, used = quota_hub
    action = await _form_action(hub, "alice")
    status, text, _ = await _page(hub, "alice", action, b"accelerator=t4")
    assert status == 403, text[:500]
    shown = math.floor(used * 10) / 10
    assert f"Error: you have used {shown:.1f} of your {used:g} hours of " in text
    assert "SpawnException" not in text
    _, model = await asyncio.to_thread(hub.request, "GET", "/users/alice")
    assert "" not in model["servers"]
