"""Drill: the kube-apiserver stopped while users render the spawn form and spawn, etcd compacted
meanwhile, the API server started again. The hub's inventory watch resumes from a
resourceVersion that is gone (a real 410), relists, and its counts equal a recount from a fresh
LIST; the form answers throughout; a spawn caught by the outage ends (ready or failed in words),
none waits forever, and a spawn after it works; a job submitted during the outage is told to try
again (503) and its retry makes one Job. The hub and the job service never exit.

Runs on the session cluster (the restart is over before the module ends) and needs one this
session may restart: not an AIINFN_KUBECONFIG cluster.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import urllib.error
import urllib.request

import pytest
import pytest_asyncio
from aiinfn_dev.devcluster.processes import free_port

from aiinfn_hub import catalog, metrics
from aiinfn_hub.inventory import Inventory
from tests.faults import apiserver
from tests.helpers import wait_until
from tests.hub import KWOK_NOTEBOOKS, hub_in_namespace
from tests.jobs_service import Service, hub_lines, submit_through_hub

pytestmark = pytest.mark.integration

USERS = {"alice": {"groups": ["cms-ml"]}, "bob": {"groups": ["cms-ml"]}}
SPAWNER = {
    "default_policy": {"accelerators": ["cpu"], "environments": "*"},
    "group_policies": {"cms-ml": {"accelerators": "*", "environments": "*", "max_accelerators": 2}},
}
CATALOG = catalog.load(catalog.default_path())
SERVICE_UNAVAILABLE = "the cluster cannot be reached right now; try again"
UNITS = re.compile(r'^aiinfn_accelerator_units\{model="([^"]+)",state="([^"]+)"\} (\S+)$', re.M)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env(devcluster, api_client, kueue, tmp_path_factory):
    """(hub, job service, alice's token)."""
    kubeconfig, cluster = devcluster
    if cluster is None:
        pytest.skip("the drill restarts the API server of a dev cluster this session runs")
    tmp = tmp_path_factory.mktemp("apiserver")
    port, token = free_port(), secrets.token_hex(32)
    lines = [*KWOK_NOTEBOOKS, *hub_lines(port, token, rate_limit=200.0, rate_limit_burst=400)]
    async with hub_in_namespace(
        api_client, kubeconfig, tmp, USERS, SPAWNER, lines, kueue_documents=kueue
    ) as hub:
        service = Service(tmp, hub, port, token)
        await asyncio.to_thread(service.start)
        try:
            status, body = await asyncio.to_thread(
                hub.request, "POST", "/users/alice/tokens", {"note": "drill"}
            )
            assert status == 201, body
            yield hub, service, body["token"]
        finally:
            service.stop()


def scrape(hub) -> str:
    request = urllib.request.Request(
        f"{hub.url}/hub/metrics", headers={"Authorization": f"token {hub.token}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read().decode()


def watch_count(text: str, name: str) -> float:
    match = re.search(rf'^aiinfn_inventory_watch_{name}{{resource="pods"}} (\S+)$', text, re.M)
    return float(match[1]) if match else 0.0


async def items(method) -> list[dict]:
    response = await method(_preload_content=False)
    try:
        return json.loads(await response.read())["items"]
    finally:
        response.release()


async def equals_recount(hub, core) -> bool:
    """The hub's units by model and state (its /hub/metrics) equal a recount from fresh LISTs."""
    recount = Inventory(CATALOG.accelerators)
    recount.reset(await items(core.list_node), await items(core.list_pod_for_all_namespaces))
    expected = {
        key: float(value)
        for key, value in metrics.unit_counts(recount, CATALOG.projects).by_state.items()
    }
    shown = {(m, s): float(v) for m, s, v in UNITS.findall(await asyncio.to_thread(scrape, hub))}
    return shown == expected


def form_answers(hub, user: str) -> bool:
    status, page = hub.page("/hub/spawn", user)
    return status == 200 and 'data-accelerator="t4"' in page


async def spawn_ends(hub, user: str, server: str, options: dict) -> dict:
    """The last progress event of a spawn (ready or failed): the stream ends, whatever happens."""
    status, answer = await asyncio.to_thread(
        hub.request, "POST", f"/users/{user}/servers/{server}", options
    )
    if status == 201:
        return {"ready": True}
    if status != 202:
        return {"failed": True, "message": answer.get("message", str(answer))}
    events = await asyncio.to_thread(hub.events, f"/users/{user}/servers/{server}/progress")
    return events[-1]


OUTAGE_JOB = {"name": "outage", "command": ["python", "-c", "print(1)"], "idempotency_key": "k-o"}


async def test_a_restart_with_expired_watches_relists_and_loses_no_spawn(
    env, devcluster, core, batch
):
    hub, service, token = env
    _, cluster = devcluster
    await wait_until(lambda: equals_recount(hub, core), "the inventory to equal a recount")
    before = await asyncio.to_thread(scrape, hub)

    # A spawn in flight when the API server goes, and the form rendered while it is gone.
    pending = asyncio.ensure_future(spawn_ends(hub, "alice", "during", {"accelerator": "t4"}))
    await asyncio.to_thread(apiserver.stop_apiserver, cluster)
    try:
        assert await asyncio.to_thread(form_answers, hub, "bob")
        # A job submitted now is told to try again; nothing is made.
        status, answer = await asyncio.to_thread(submit_through_hub, hub, token, OUTAGE_JOB, 120)
        assert (status, answer["message"]) == (503, SERVICE_UNAVAILABLE), answer
        await asyncio.to_thread(apiserver.compact_etcd, cluster)
    finally:
        await asyncio.to_thread(apiserver.start_apiserver, cluster)

    # The spawn caught by the outage ends: ready, or failed with words (never a traceback).
    last = await pending
    assert last.get("ready") or (last.get("failed") and "Traceback" not in last["message"]), last

    async def relisted_after_410():
        text = await asyncio.to_thread(scrape, hub)
        return watch_count(text, "expired_total") > watch_count(before, "expired_total") and (
            watch_count(text, "relists_total") > watch_count(before, "relists_total")
        )

    await wait_until(relisted_after_410, "the pod watch to meet a 410 and relist")
    await wait_until(lambda: equals_recount(hub, core), "the inventory to equal a recount")

    # The submission's retry makes its one Job; spawning works again; the form answers; the hub
    # and the service are the same processes.
    # (A restarted API server may throttle for a moment: the service says 503 until it answers.)
    async def accepted():
        status, job = await asyncio.to_thread(submit_through_hub, hub, token, OUTAGE_JOB, 120)
        assert status in (201, 503), job
        return job if status == 201 else None

    job = await wait_until(accepted, "the submission's retry to be accepted", interval=1.0)
    jobs = await batch.list_namespaced_job(hub.namespace)
    assert [j.metadata.name for j in jobs.items] == [job["id"]]
    assert (await spawn_ends(hub, "bob", "after", {"accelerator": "t4"})).get("ready")
    assert await asyncio.to_thread(form_answers, hub, "alice")
    for user, server in (("alice", "during"), ("bob", "after")):
        await asyncio.to_thread(
            hub.request, "DELETE", f"/users/{user}/servers/{server}", {"remove": True}
        )
    await wait_until(lambda: equals_recount(hub, core), "the inventory to equal a recount")
    assert hub.process.poll() is None and service.process.poll() is None

    # The cluster is whole again for the tests after this one: Kueue admits the Job (it
    # unsuspends it), and the cluster's state file names the API server that runs now.
    async def admitted():
        found = await batch.read_namespaced_job(job["id"], hub.namespace)
        return found.spec.suspend is False

    await wait_until(admitted, "Kueue to admit the job")
    assert cluster.status().state == "running"
