"""Metrics end to end: a real Prometheus scrapes a real hub and its job service on the dev
cluster, as the service `prometheus` with the shipped read:metrics role (50-metrics.py), and the
storage exporter over the hub's storage folders (devstorage's local stand-ins for the exports).

It sees every target up, the accelerator units the hub's inventory counts (and the recording
rules' sums of them), a refused spawn under its reason, the job service's counters move, and the
bytes and files of a generated home.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import pytest_asyncio
from aiinfn_dev.devcluster.processes import free_port
from kubernetes_asyncio import client

from aiinfn_hub import catalog, metrics, names
from aiinfn_hub.inventory import Inventory
from tests.helpers import wait_until
from tests.hub import KWOK_NOTEBOOKS, hub_in_namespace
from tests.jobs_service import PREFIX, Service
from tests.jobs_service import hub_lines as jobs_lines
from tests.monitoring import dashboard
from tests.prometheus import AUTHENTICATED, JOBS, storage_exporter
from tests.prometheus import hub_lines as prometheus_lines

pytestmark = pytest.mark.integration

USERS = {"alice": {"groups": ["cms-ml"]}, "dave": {"groups": []}}
SPAWNER = {
    "default_policy": {"accelerators": ["cpu"], "environments": "*"},
    "group_policies": {"cms-ml": {"accelerators": "*", "environments": "*", "max_accelerators": 2}},
}
CATALOG = catalog.load(catalog.default_path())


def get(url: str, token: str | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def post(url: str, body: dict, token: str | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"token {token}"} if token else {}
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def storage_roots(hub) -> tuple[Path, Path]:
    """The folders standing in for the homes' export and the projects' (one for all)."""
    folders = hub.storage_folders
    projects = {f for claim, f in folders.items() if claim.startswith("aiinfn-project-")}
    assert len(projects) == 1, folders
    return folders["aiinfn-home"], projects.pop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env(devcluster, api_client, kueue, prometheus, tmp_path_factory):
    """A hub with the job service and the storage exporter, scraped by the session's
    Prometheus."""
    kubeconfig, _ = devcluster
    tmp = tmp_path_factory.mktemp("metrics")
    port, token = free_port(), secrets.token_hex(32)
    lines = [*jobs_lines(port, token), *prometheus_lines(prometheus.token), *KWOK_NOTEBOOKS]
    async with hub_in_namespace(
        api_client, kubeconfig, tmp, USERS, SPAWNER, lines, kueue_documents=kueue
    ) as hub:
        service = Service(tmp, hub, port, token)
        await asyncio.to_thread(service.start)
        target = hub.url.removeprefix("http://")
        try:
            with storage_exporter(*storage_roots(hub), tmp / "storage-exporter.log") as exporter:
                prometheus.scrape("storage", [exporter])
                for job in AUTHENTICATED:
                    prometheus.scrape(job, [target])
                status, body = await asyncio.to_thread(
                    hub.request, "POST", "/users/alice/tokens", {"note": "metrics tests"}
                )
                assert status == 201, body
                yield hub, service, body["token"]
        finally:
            for job in JOBS:
                prometheus.scrape(job, [])
            service.stop()


def scalar(prometheus, expression: str) -> float | None:
    result = prometheus.query(expression)
    return float(result[0]["value"][1]) if result else None


async def test_prometheus_scrapes_every_target(env, prometheus):
    async def all_up():
        up = await asyncio.to_thread(prometheus.values, "up", "job")
        return up if up == dict.fromkeys(JOBS, 1.0) else None

    await wait_until(all_up, "Prometheus to scrape the hub, the job service and the exporter")
    targets = await asyncio.to_thread(prometheus.targets)
    assert {t["labels"]["job"]: t["health"] for t in targets} == dict.fromkeys(JOBS, "up")


async def inventory_counts(api_client) -> dict[tuple[str, str], float]:
    """What the hub's inventory counts, recounted from a fresh list of nodes and pods."""
    core = client.CoreV1Api(api_client)
    nodes = await core.list_node(_preload_content=False)
    pods = await core.list_pod_for_all_namespaces(_preload_content=False)
    inventory = Inventory(CATALOG.accelerators)
    inventory.reset(json.loads(await nodes.read())["items"], json.loads(await pods.read())["items"])
    counts = metrics.unit_counts(inventory, CATALOG.projects)
    return {key: float(value) for key, value in counts.by_state.items()}


def scraped_units(prometheus, expression: str) -> dict[tuple[str, str], float]:
    return {
        (s["metric"]["model"], s["metric"]["state"]): float(s["value"][1])
        for s in prometheus.query(expression)
    }


async def test_accelerator_units_equal_the_inventorys_counts(env, prometheus, api_client):
    hub, _, _ = env
    await asyncio.to_thread(hub.page, "/hub/spawn", "alice")  # it starts the hub's inventory
    expected = await inventory_counts(api_client)
    assert expected["t4", "free"] > 0 and len(expected) == 4 * len(CATALOG.accelerators) - 4

    async def matches(expression):
        scraped = await asyncio.to_thread(scraped_units, prometheus, expression)
        return scraped if scraped == expected else None

    await wait_until(
        lambda: matches('aiinfn_accelerator_units{job="hub"}'), "the scraped units to match"
    )
    await wait_until(
        lambda: matches("model_state:aiinfn_accelerator_units:sum"), "the recorded sums to match"
    )
    synced = await asyncio.to_thread(prometheus.values, "aiinfn_inventory_watch_synced", "resource")
    assert synced == {"nodes": 1.0, "pods": 1.0}


def job_state(hub, token: str, job_id: str) -> str:
    status, body = get(f"{hub.url}{PREFIX}api/jobs/{job_id}", token)
    assert status == 200, body
    return json.loads(body)["state"]


def cancel(hub, token: str, job_id: str) -> None:
    request = urllib.request.Request(
        f"{hub.url}{PREFIX}api/jobs/{job_id}",
        method="DELETE",
        headers={"Authorization": f"token {token}"},
    )
    urllib.request.urlopen(request, timeout=30).read()


async def test_an_offloaded_jobs_units_count_as_offloaded(env, prometheus, api_client):
    hub, _, alice = env
    await asyncio.to_thread(hub.page, "/hub/spawn", "alice")
    body = {
        "name": "remote",
        "command": ["python", "-c", "print('remote')"],
        "accelerator": "t4",
        "offload": "only",
        "env": {"DEVCLUSTER_SITE_RUNTIME": "600s"},  # the dev cluster's site runs it 10 min
    }
    status, job = await asyncio.to_thread(post, f"{hub.url}{PREFIX}api/jobs", body, alice)
    assert status == 201, job
    try:

        async def running():
            return await asyncio.to_thread(job_state, hub, alice, job["id"]) == "running"

        await wait_until(running, "the offloaded job to run")
        expected = await inventory_counts(api_client)
        assert expected["t4", "offloaded"] == 1.0

        async def matches():
            scraped = await asyncio.to_thread(
                scraped_units, prometheus, 'aiinfn_accelerator_units{job="hub"}'
            )
            return scraped == expected

        await wait_until(matches, "the scraped units to count the offloaded T4")
    finally:
        await asyncio.to_thread(cancel, hub, alice, job["id"])


async def test_a_refused_spawn_counts_its_reason(env, prometheus):
    hub, _, _ = env
    series = 'aiinfn_spawn_refusals_total{job="hub",reason="invalid"}'
    present = await wait_until(
        lambda: asyncio.to_thread(prometheus.query, series), "the refusal series (at 0)"
    )
    before = float(present[0]["value"][1])
    status, body = await asyncio.to_thread(
        hub.request, "POST", "/users/dave/server", {"accelerator": "no-such-accelerator"}
    )
    assert status == 400, body

    async def counted():
        value = await asyncio.to_thread(scalar, prometheus, series)
        return value if value == before + 1 else None

    await wait_until(counted, "the refusal to be counted")


async def test_the_job_services_counters_move_on_a_submission(env, prometheus):
    hub, _, alice = env
    created = 'aiinfn_jobs_submissions_total{job="jobs",kind="job",outcome="created"}'
    refused = 'aiinfn_jobs_refusals_total{job="jobs",reason="unauthenticated"}'
    before = {q: await asyncio.to_thread(scalar, prometheus, q) or 0.0 for q in (created, refused)}
    url = f"{hub.url}{PREFIX}api/jobs"
    body = {"name": "counted", "command": ["python", "-c", "print('counted')"]}
    status, job = await asyncio.to_thread(post, url, body, alice)
    assert status == 201, job
    try:
        status, answer = await asyncio.to_thread(post, url, body)  # no token
        assert status == 401, answer

        async def moved():
            now = {q: await asyncio.to_thread(scalar, prometheus, q) for q in before}
            return now if all(now[q] == before[q] + 1 for q in before) else None

        await wait_until(moved, "the job service's counters to move")
    finally:
        await asyncio.to_thread(cancel, hub, alice, job["id"])


async def test_metrics_need_read_metrics_and_health_is_public(env, prometheus):
    hub, _, alice = env
    service_metrics = f"{hub.url}{PREFIX}metrics"
    assert (await asyncio.to_thread(get, service_metrics))[0] == 401
    assert (await asyncio.to_thread(get, service_metrics, "not-a-token"))[0] == 401
    assert (await asyncio.to_thread(get, service_metrics, alice))[0] == 403
    status, text = await asyncio.to_thread(get, service_metrics, prometheus.token)
    assert status == 200 and b"aiinfn_jobs_submissions_total" in text
    assert (await asyncio.to_thread(get, f"{hub.url}/hub/metrics", alice))[0] == 403
    status, health = await asyncio.to_thread(get, f"{hub.url}{PREFIX}health")
    assert (status, json.loads(health)) == (200, {"status": "ok"})


def generate_home(home: Path) -> tuple[int, int]:
    """Files of known sizes, a hard link, symbolic links out of the home: (bytes, files)."""
    (home / "data" / "deep").mkdir(parents=True)
    sizes = {"notebook.ipynb": 12_345, "data/a.bin": 1_000_000, "data/deep/b.csv": 777}
    for name, size in sizes.items():
        (home / name).write_bytes(b"0" * size)
    os.link(home / "data" / "a.bin", home / "a-again.bin")
    (home / "to-projects").symlink_to(home.parent.parent)
    return sum(sizes.values()), len(sizes) + 1


async def test_the_storage_exporter_counts_a_generated_home(env, prometheus):
    hub, _, _ = env
    homes, _ = storage_roots(hub)
    generated_at = time.time()
    expected_bytes, expected_files = generate_home(homes / names.slug("Erin"))
    where = '{job="storage",kind="home",name="Erin"}'

    async def counted():
        found = {
            metric: await asyncio.to_thread(scalar, prometheus, f"aiinfn_storage_{metric}{where}")
            for metric in ("bytes", "files", "errors")
        }
        return (
            found
            if found == {"bytes": expected_bytes, "files": expected_files, "errors": 0}
            else None
        )

    await wait_until(counted, "Prometheus to see Erin's home counted")
    walked = await asyncio.to_thread(
        scalar, prometheus, f"aiinfn_storage_walk_timestamp_seconds{where}"
    )
    assert walked is not None and walked >= generated_at  # the numbers' age is told


async def test_every_dashboard_query_returns_data(env, prometheus):
    """With a project folder, a refused submission and a project's offloaded T4 running, every
    query of helm-values/grafana-dashboard.json returns data from the test Prometheus."""
    hub, _, alice = env
    homes, projects = storage_roots(hub)
    generate_home(homes / names.slug("Frank"))
    (projects / names.slug("qml")).mkdir()  # a project no user here spawns or submits to
    (projects / names.slug("qml") / "shared.h5").write_bytes(b"1" * 4096)
    await asyncio.to_thread(hub.page, "/hub/spawn", "alice")  # the inventory
    url = f"{hub.url}{PREFIX}api/jobs"
    status, _ = await asyncio.to_thread(post, url, {"name": "x", "command": ["true"]})
    assert status == 401  # a refusal series
    body = {
        "name": "dashboard",
        "command": ["python", "-c", "print('dashboard')"],
        "accelerator": "t4",
        "offload": "only",
        "env": {"DEVCLUSTER_SITE_RUNTIME": "600s"},
    }
    status, job = await asyncio.to_thread(post, url, body, alice)  # cms-ml, alice's project
    assert status == 201, job
    try:

        async def running():
            return await asyncio.to_thread(job_state, hub, alice, job["id"]) == "running"

        await wait_until(running, "the offloaded job to run")
        for title, expression in dashboard.queries():
            await wait_until(
                lambda e=expression: asyncio.to_thread(prometheus.query, e),
                f"data for the panel {title!r}: {expression}",
            )
    finally:
        await asyncio.to_thread(cancel, hub, alice, job["id"])
