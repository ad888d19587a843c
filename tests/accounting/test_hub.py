"""Accounting in a real hub on the dev cluster (the shipped ServiceAccount and RBAC), with a real
PostgreSQL: a GPU notebook server's and a GPU batch pod's intervals in the ledger to the second
of the pods' own timestamps,
a hub restarted while the pod runs neither loses nor doubles it; the database's password never
in the hub's log. (test_hub_off.py: a hub without the setting.)

The notebook server is alice's, spawned through the REST API with a T4 (the pod runner runs it);
the batch pods are kwok's Job pods (they complete after their delay annotation) made for alice as
the job service makes them (its owner annotation), on the T4 node.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from datetime import datetime

import pytest
import pytest_asyncio

# ruff: noqa: E402 (the imports below need psycopg)
psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (docs/accounting.md)")

from psycopg import AsyncConnection

from aiinfn_hub import labels
from aiinfn_hub.accounting import settings
from aiinfn_hub.accounting.events import timestamp
from tests.accounting.test_hub_off import scrape
from tests.helpers import restricted_container, wait_until
from tests.hub import KWOK_NOTEBOOKS, Hub, hub_in_namespace, start_hub, stop_hub
from tests.postgres import Postgres, create_database

pytestmark = pytest.mark.integration

T4_NODE = "server1-t4"
GPU = "nvidia.com/gpu"
PASSWORD = "n0t-in-any-log"
# Notebook pods carry a finalizer, so a stopped server's pod stays readable, terminated, until
# the test has read its timestamps and removes it (test-only, in the generated hub config).
HOLD = "tests.aiinfn.infn.it/hold"
HOLD_HOOK = f"""
def _hold(spawner, pod):
    pod.metadata.finalizers = [{HOLD!r}]
    return pod
c.KubeSpawner.modify_pod_hook = _hold
"""


def job(name: str, delay: str) -> dict:
    """A Job whose pod holds one T4 for `delay` after it runs, made for alice."""
    annotations = {
        "pod-complete.stage.kwok.x-k8s.io/delay": delay,
        labels.OWNER_NAME: "alice",
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "nodeSelector": {"kubernetes.io/hostname": T4_NODE},
                    "containers": [restricted_container(limits={GPU: "1"})],
                },
            },
        },
    }


async def job_pod(core, namespace: str, name: str):
    pods = (await core.list_namespaced_pod(namespace, label_selector=f"job-name={name}")).items
    return pods[0] if pods else None


def pod_seconds(pod) -> int:
    """The pod's own interval: bound (PodScheduled) to its last container's finish, seconds."""
    raw = pod.to_dict()
    scheduled = next(c for c in raw["status"]["conditions"] if c["type"] == "PodScheduled")
    finished = [
        s["state"]["terminated"]["finished_at"] for s in raw["status"]["container_statuses"]
    ]

    def second(value) -> datetime:
        text = value if isinstance(value, str) else value.isoformat()
        parsed = timestamp(text)
        assert parsed is not None, value
        return parsed

    end = max(second(value) for value in finished)
    return int((end - second(scheduled["last_transition_time"])).total_seconds())


async def rows(dsn: str, uid: str) -> dict[str, tuple]:
    async with await AsyncConnection.connect(dsn) as connection:
        cursor = await connection.execute(
            "SELECT phase, user_name, model, kind, units, at FROM accounting_events "
            "WHERE allocation = %s",
            [uid],
        )
        return {row[0]: row[1:] for row in await cursor.fetchall()}


def ledger_seconds(found: dict[str, tuple]) -> int:
    return int((found["end"][4] - found["start"][4]).total_seconds())


def as_recorded(found: dict[str, tuple], pod) -> bool:
    """The ledger's interval is the pod's own to the second: under accounting the hub watches
    finished pods too, so it reads the containers' finish (docs/accounting.md)."""
    return ledger_seconds(found) == pod_seconds(pod)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def ledger(postgres: Postgres) -> tuple[str, dict[str, str]]:
    """A fresh database for the module's hubs: its libpq DSN, and the hubs' environment."""
    return environment(postgres, create_database(postgres))


def environment(postgres: Postgres, name: str) -> tuple[str, dict[str, str]]:
    """The DSN of a database, and a hub environment with its URL. The URL carries a password,
    which trust authentication ignores, to show that the hub never logs it."""
    url = postgres.url(name).replace("@", f":{PASSWORD}@", 1)
    return postgres.dsn(name), {settings.URL_ENV: url}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def hub(devcluster, api_client, ledger, tmp_path_factory):
    kubeconfig, _ = devcluster
    folder = tmp_path_factory.mktemp("accounting-hub")
    async with hub_in_namespace(
        api_client,
        kubeconfig,
        folder,
        {"alice": {"groups": []}},
        {},
        [HOLD_HOOK, *KWOK_NOTEBOOKS],
        ledger[1],
    ) as running:
        yield running


async def wait_for_log(hub: Hub, text: str) -> None:
    async def logged() -> bool:
        return text in hub.log()

    await wait_until(logged, f"the hub to log {text!r}")


async def finished_pod(core, namespace: str, name: str):
    async def succeeded():
        pod = await job_pod(core, namespace, name)
        return pod if pod is not None and pod.status.phase == "Succeeded" else None

    return await wait_until(succeeded, f"the pod of Job {name} to succeed", limit=180)


async def recorded(dsn: str, uid: str, phases: set[str]) -> dict[str, tuple]:
    async def stored():
        found = await rows(dsn, uid)
        return found if phases <= set(found) else None

    return await wait_until(stored, f"the ledger to hold {sorted(phases)} of {uid}")


async def test_a_gpu_pods_interval_is_in_the_ledger_to_the_second(hub, ledger, core, batch):
    name = f"acct-{uuid.uuid4().hex[:6]}"
    await batch.create_namespaced_job(hub.namespace, job(name, "7s"))
    pod = await finished_pod(core, hub.namespace, name)
    found = await recorded(ledger[0], pod.metadata.uid, {"start", "end"})
    assert found["start"][:4] == ("alice", "t4", "batch", 1)
    assert as_recorded(found, pod) and pod_seconds(pod) >= 7, (found, pod_seconds(pod))
    text = await asyncio.to_thread(scrape, hub)
    assert "\naiinfn_accounting_last_commit_timestamp_seconds " in text
    assert "\naiinfn_accounting_queued_events 0.0" in text
    assert "\naiinfn_accounting_dropped_events_total 0.0" in text
    assert "accounting ledger migrated" in hub.log()
    assert PASSWORD not in hub.log()


async def test_a_gpu_notebook_servers_interval_is_in_the_ledger_to_the_second(hub, ledger, core):
    status, body = await asyncio.to_thread(
        hub.request, "POST", "/users/alice/servers/gpu", {"accelerator": "t4"}
    )
    assert status in (201, 202), body
    selector = "hub.jupyter.org/servername=gpu"

    async def the_pod(terminated: bool):
        pods = (await core.list_namespaced_pod(hub.namespace, label_selector=selector)).items
        statuses = (pods[0].status.container_statuses or []) if pods else []
        if terminated:
            return pods[0] if statuses and all(s.state.terminated for s in statuses) else None
        return pods[0] if pods and pods[0].status.phase == "Running" else None

    pod = await wait_until(lambda: the_pod(False), "the notebook pod to run", limit=180)
    assert PASSWORD not in str(pod.spec)  # the ledger's URL never reaches a pod
    try:
        await recorded(ledger[0], pod.metadata.uid, {"start"})
        status, body = await asyncio.to_thread(hub.request, "DELETE", "/users/alice/servers/gpu")
        assert status in (202, 204), body
        pod = await wait_until(lambda: the_pod(True), "the notebook to stop", limit=120)
    finally:
        await core.patch_namespaced_pod(
            pod.metadata.name, hub.namespace, {"metadata": {"finalizers": None}}
        )
    found = await recorded(ledger[0], pod.metadata.uid, {"start", "end"})
    assert found["start"][:4] == ("alice", "t4", "notebook", 1)
    assert as_recorded(found, pod) and pod_seconds(pod) > 0, (found, pod_seconds(pod))


async def test_a_hub_restarted_mid_allocation_neither_loses_nor_doubles_it(
    devcluster, api_client, postgres, core, batch, tmp_path
):
    kubeconfig, _ = devcluster
    dsn, env = environment(postgres, create_database(postgres))
    name = f"acct-{uuid.uuid4().hex[:6]}"
    async with hub_in_namespace(
        api_client, kubeconfig, tmp_path / "first", {}, {}, env_extra=env
    ) as first:
        await batch.create_namespaced_job(first.namespace, job(name, "60s"))
        running = await wait_until(lambda: job_pod(core, first.namespace, name), "the pod")
        uid = running.metadata.uid
        await recorded(dsn, uid, {"start"})
        os.killpg(first.process.pid, signal.SIGTERM)  # the hub stops while the pod runs
        await asyncio.to_thread(first.process.wait, 30)
        (tmp_path / "second").mkdir()
        second, responder = await asyncio.to_thread(
            start_hub, tmp_path / "second", first.kubeconfig, first.namespace, {}, {}, (), env
        )
        try:

            async def listed() -> bool:
                text = await asyncio.to_thread(scrape, second)
                return 'aiinfn_inventory_watch_synced{resource="pods"} 1.0' in text

            await wait_until(listed, "the second hub's inventory to list the pods")
            pod = await job_pod(core, first.namespace, name)
            assert pod.status.phase == "Running", "the pod ended before the second hub listed it"
            pod = await finished_pod(core, first.namespace, name)
            found = await recorded(dsn, uid, {"start", "end"})
            assert as_recorded(found, pod) and pod_seconds(pod) >= 60, (found, pod_seconds(pod))
            async with await AsyncConnection.connect(dsn) as connection:
                cursor = await connection.execute(
                    "SELECT count(*) FROM accounting_events WHERE allocation = %s", [uid]
                )
                assert await cursor.fetchone() == (2,)
        finally:
            await asyncio.to_thread(stop_hub, second, responder)
