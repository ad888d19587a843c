"""Culling end to end (docs/culling.md): the real jupyterhub-idle-culler, run by a real hub on the
dev cluster as the service `aiinfn-culler` with its own token and the shipped role, deciding with
the platform's arbiter; a real Prometheus scraping the stand-in DCGM exporter for the kwok GPUs.

One hub, six servers at once, short limits: an idle GPU server whose notebook looks busy is
warned, then culled by the GPU rule (and its T4 is free on the form again), and so is a MIG
slice whose engine is idle (its profiling field); a busy GPU with a busy notebook survives; an
idle GPU server is culled by the accelerator timeout while an idle CPU server, on the longer CPU
timeout, still runs, then is warned and culled in turn; a server of an exempt group is never
warned nor culled. And the done-when case: a culled A30 server's GPU goes to the project's Kueue
job that waited for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
from datetime import UTC, datetime

import pytest
import pytest_asyncio
from aiinfn_dev import prometheus as prometheus_server
from aiinfn_dev.dcgm import DcgmStandIn, GpuPod
from kubernetes_asyncio import client

from aiinfn_hub.accounting.settings import URL_ENV
from tests.helpers import wait_until
from tests.hub import KWOK_NOTEBOOKS, REPO, hub_in_namespace
from tests.integration.test_kueue import A30, Cluster, make_job, waits_for_a_node

pytestmark = pytest.mark.integration

USERS = {
    "alice": {"groups": ["cms-ml"]},  # T4, GPU idle, notebook busy: the GPU rule
    "bob": {"groups": ["cms-ml"]},  # T4, GPU busy, notebook busy: kept
    "carol": {"groups": ["cms-ml"]},  # T4, GPU busy, notebook idle: accelerator timeout
    "dave": {"groups": []},  # CPU only, idle: CPU timeout
    "erin": {"groups": ["vip"]},  # CPU only, idle, exempt
    "frank": {"groups": ["cms-ml"]},  # no server: looks at the form
    "gina": {"groups": ["cms-ml"]},  # A30, GPU idle: frees it for a waiting batch job
    "hana": {"groups": ["cms-ml"]},  # MIG slice, engine idle (its profiling ratio), notebook busy
}
SPAWNER = {
    "default_policy": {"accelerators": ["cpu"], "environments": "*"},
    "group_policies": {"cms-ml": {"accelerators": "*", "environments": "*", "max_accelerators": 1}},
}
CULLING = {
    "check_every": 1,
    "warn_before": 5,
    # A busy notebook must report activity within accelerator_timeout - warn_before (7 s) to
    # stay unwarned, even on a loaded machine; dave's CPU timeout stays well after carol's cull.
    "accelerator_timeout": 12,
    "cpu_timeout": 27,
    "max_age": 0,
    "gpu_idle_time": 12,
    "gpu_idle_threshold": 5.0,
    "exempt_groups": ["vip"],
}
LIMIT = 90  # seconds to wait for a culler event: far above the limits above
# Accounting on where psycopg is installed (not in ./dev test's JupyterHub 5.5 pass).
ACCOUNTING = importlib.util.find_spec("psycopg") is not None


def hub_lines(prometheus_url: str) -> list[str]:
    """Culling on with CULLING, then 60-culling.py again (the test config replaced the
    services and roles lists after the first load), run in this file's namespace as z2jh runs
    jupyterhub_config.d/ after hub.config, so that it sees these settings."""
    settings = {**CULLING, "enabled": True, "prometheus_url": prometheus_url}
    path = str(REPO / "jupyterhub_config.d" / "60-culling.py")
    return [
        *(f"c.AiInfnCulling.{key} = {value!r}" for key, value in settings.items()),
        f"exec(compile(open({path!r}).read(), {path!r}, 'exec'))",
    ]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env(devcluster, api_client, kueue, tmp_path_factory, request):
    """The hub with the culler (and accounting on a fresh ledger, `ledger`), the stand-in
    exporter and the module's Prometheus scraping it."""
    kubeconfig, _ = devcluster
    tmp = tmp_path_factory.mktemp("culling")
    ledger = ""
    accounting: dict[str, str] = {}
    if ACCOUNTING:
        from tests.postgres import create_database

        postgres = request.getfixturevalue("postgres")
        database = create_database(postgres)
        ledger, accounting = postgres.dsn(database), {URL_ENV: postgres.url(database)}
    exporter = DcgmStandIn()
    exporter.start()
    try:
        prometheus = prometheus_server.start(tmp / "prometheus", jobs={"dcgm": "/metrics"})
    except prometheus_server.Unavailable as error:
        exporter.stop()
        pytest.skip(str(error))
    prometheus.scrape("dcgm", [exporter.target])
    try:
        async with hub_in_namespace(
            api_client,
            kubeconfig,
            tmp,
            USERS,
            SPAWNER,
            [*hub_lines(prometheus.url), *KWOK_NOTEBOOKS],
            accounting,
            kueue_documents=kueue,
        ) as hub:
            yield hub, exporter, prometheus, ledger
    finally:
        prometheus_server.stop(prometheus)
        exporter.stop()


async def call(hub, method, path, body=None):
    return await asyncio.to_thread(hub.request, method, path, body)


async def running(hub, user) -> bool:
    status, model = await call(hub, "GET", f"/users/{user}")
    assert status == 200, model
    server = model["servers"].get("")
    return bool(server and server["ready"])


async def spawn(hub, user, options) -> None:
    status, body = await call(hub, "POST", f"/users/{user}/server", options)
    assert status in (201, 202), body
    await wait_until(lambda: running(hub, user), f"{user}'s server to be ready")


async def warning(hub, user) -> str:
    """The culler's warning on the user's hub home page ('' if none)."""
    status, page = await asyncio.to_thread(hub.page, "/hub/home", user)
    assert status == 200, page[:300]
    start = page.find("Your server")
    return page[start : page.find("</div>", start)] if start >= 0 else ""


async def warned_while_running(hub, user) -> str:
    text = await warning(hub, user)
    if text:
        assert await running(hub, user), f"{user}'s server was stopped before its warning"
    return text


async def stopped(hub, user) -> bool:
    return not await running(hub, user)


class Warnings:
    """Each user's first warning seen on their home page while their server ran, watched for
    every user at once: a warning lasts `warn_before` seconds, so a test waiting for one user's
    cull must not miss another's window meanwhile."""

    def __init__(self, hub, users) -> None:
        self.hub, self.seen = hub, {}
        self.tasks = [asyncio.create_task(self._watch(user)) for user in users]

    async def _watch(self, user) -> None:
        while True:
            text = await warning(self.hub, user)
            if text and await running(self.hub, user):
                self.seen[user] = text
                return
            await asyncio.sleep(0.2)

    async def of(self, user) -> str:
        return await wait_until(lambda: _now(self.seen.get(user)), f"{user}'s warning", LIMIT)

    def stop(self) -> None:
        for task in self.tasks:
            task.cancel()


async def _now(value):
    return value


@contextlib.asynccontextmanager
async def busy_browsers(hub, users: set[str]):
    """The notebooks of `users` (a set the test may change) report activity all along, as a
    polling browser tab does."""

    async def report():
        while True:
            body = {"servers": {"": {"last_activity": datetime.now(UTC).isoformat()}}}
            # At once: one slow answer from a loaded hub must not hold back the others' reports.
            await asyncio.gather(
                *(call(hub, "POST", f"/users/{user}/activity", body) for user in list(users))
            )
            await asyncio.sleep(0.5)

    task = asyncio.create_task(report())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def t4_free(hub) -> int:
    status, page = await asyncio.to_thread(hub.page, "/hub/spawn", "frank")
    assert status == 200, page[:300]
    block = page.split('data-accelerator="t4"', 1)[1]
    return int(block.split('data-free="', 1)[1].split('"', 1)[0])


async def test_servers_are_warned_then_culled_by_their_rule(env):
    hub, exporter, _, _ = env
    gpus = {"alice": "t4", "bob": "t4", "carol": "t4"}
    busy = set(USERS) - {"frank", "gina"}
    async with busy_browsers(hub, busy):
        # every server busy while they all start (spawns take seconds each here)
        for user in gpus:
            exporter.set(GpuPod(hub.namespace, f"jupyter-{user}", "server1-t4", "Tesla T4", [80]))
        mig = GpuPod(
            hub.namespace, "jupyter-hana", "server2-a100-mig", "NVIDIA A100", [0.9], "notebook",
            mig_profile="1g.10gb",
        )  # fmt: skip
        exporter.set(mig)
        gpus["hana"] = "a100-mig-1g-10gb"
        await asyncio.gather(
            *(spawn(hub, user, {"accelerator": gpus.get(user, "cpu")}) for user in busy)
        )
        free_with_three = await t4_free(hub)
        # then: alice's GPU idle, carol's, dave's and erin's notebooks idle
        warnings = Warnings(hub, ("alice", "carol", "dave"))
        exporter.set(GpuPod(hub.namespace, "jupyter-alice", "server1-t4", "Tesla T4", [0]))
        mig.utilisation = [0.0]
        exporter.set(mig)
        busy -= {"carol", "dave", "erin"}
        try:
            # carol: GPU busy but no activity, on the accelerator timeout; dave's CPU server,
            # idle as long, is on the longer CPU timeout and still runs then.
            assert "has not been used" in (text := await warnings.of("carol"))
            assert "To keep it: use it" in text
            await wait_until(lambda: stopped(hub, "carol"), "carol's server culled", LIMIT)
            assert await running(hub, "dave")

            # alice: notebook busy, GPU idle: the GPU rule, after its warning
            text = await warnings.of("alice")
            assert "accelerators have been below 5% busy" in text, text
            await wait_until(lambda: stopped(hub, "alice"), "alice's server culled", LIMIT)
            await wait_until(
                lambda: _equals(t4_free(hub), free_with_three + 2), "the two T4s free on the form"
            )
            # hana: a MIG slice whose graphics engine is idle (DCGM_FI_PROF_GR_ENGINE_ACTIVE)
            await wait_until(lambda: stopped(hub, "hana"), "hana's server culled", LIMIT)

            assert "has not been used" in await warnings.of("dave")
            await wait_until(lambda: stopped(hub, "dave"), "dave's server culled", LIMIT)
            assert await warning(hub, "dave") == ""
        finally:
            warnings.stop()

        # bob's busy GPU and notebook, erin's exempt group: never warned, still running
        for user in ("bob", "erin"):
            assert await running(hub, user) and await warning(hub, user) == ""
    log = hub.log()
    assert "Culling alice/: gpu-idle" in log and "Culling carol/: inactive" in log
    assert "Culling dave/: inactive" in log and "Warning bob/" not in log
    assert "Culling hana/: gpu-idle" in log
    assert "Warning erin/" not in log


async def _equals(awaitable, expected) -> bool:
    return await awaitable == expected


async def test_a_culled_gpu_server_frees_its_gpu_for_a_waiting_batch_job(env, api_client):
    """The done-when case on the farm's only A30: gina's server holds it with the GPU idle (her
    notebook busy), a project's Kueue job waits for a node; the culler warns, stops the server,
    and the job is admitted and runs on that A30."""
    hub, exporter, _, ledger = env
    cluster = Cluster(api_client, hub.namespace)
    pod = GpuPod(hub.namespace, "jupyter-gina", "server2-a30", "NVIDIA A30", [80])
    exporter.set(pod)
    busy = {"gina"}
    async with busy_browsers(hub, busy):
        await spawn(hub, "gina", {"accelerator": "a30"})
        pod_uid = (
            await client.CoreV1Api(api_client).read_namespaced_pod("jupyter-gina", hub.namespace)
        ).metadata.uid
        job = make_job("after-cull", "cms-ml", {"nvidia.com/gpu": "1"}, node_labels=A30)
        await cluster.submit(job)
        await wait_until(lambda: waits_for_a_node(cluster, "after-cull"), "the job to wait")
        assert await cluster.suspended("after-cull")

        exporter.set(GpuPod(hub.namespace, "jupyter-gina", "server2-a30", "NVIDIA A30", [0]))
        text = await wait_until(lambda: warned_while_running(hub, "gina"), "gina's warning")
        assert "accelerators have been below 5% busy" in text
        await wait_until(lambda: stopped(hub, "gina"), "gina's server culled", LIMIT)
    assert set((await cluster.wait_admitted("after-cull")).values()) == {"a30"}
    [job_pod] = await cluster.wait_running("after-cull")
    assert job_pod.spec.node_name == "server2-a30"
    if ledger:  # the server's interval in the ledger is closed
        await wait_until(lambda: _ledger_phases(ledger, pod_uid), "gina's interval to close")


async def _ledger_phases(dsn: str, uid: str) -> bool:
    from psycopg import AsyncConnection

    async with await AsyncConnection.connect(dsn) as connection:
        cursor = await connection.execute(
            "SELECT phase, at FROM accounting_events WHERE allocation = %s", [uid]
        )
        found = dict(await cursor.fetchall())
    return set(found) == {"start", "end"} and found["start"] <= found["end"]
