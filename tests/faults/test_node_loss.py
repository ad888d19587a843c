"""Fault drill: a pod deleted, and a node deleted, under running notebook servers and a batch job,
on the real control plane (kube-controller-manager's pod garbage collector, the real Kueue) with
the hub and the job service as the shipped ServiceAccount.

The notebooks really run (the dev cluster's pod runner): each writes a file into its home folder
on its first start and refuses to start again without it, so a server that starts again proves
that the home folder survived. The job runs long the first time and short after
(run_long_then_short), so it completes only once it has been restarted.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import urllib.request

import pytest
import pytest_asyncio
from aiinfn_dev.devcluster import topology
from aiinfn_dev.devcluster.processes import free_port

from tests.helpers import wait_until
from tests.hub import Hub, hub_in_namespace
from tests.jobs_service import PREFIX, Service, hub_lines, run_long_then_short

pytestmark = pytest.mark.integration

USERS = {"alice": {"groups": ["cms-ml"]}, "bob": {"groups": ["cms-ml"]}}
SPAWNER = {
    "default_policy": {"accelerators": ["cpu"], "environments": "*"},
    "group_policies": {"cms-ml": {"accelerators": "*", "environments": "*", "max_accelerators": 4}},
}
# Two nodes offer the RTX 5000: the one a server ran on is deleted, the other takes its restart.
RTX = {"accelerator": "rtx5000"}
# The farm has one T4 node: a job there waits for it to come back.
T4 = {"accelerator": "t4"}
KEEP = (
    "f=/home/jovyan/kept.txt; "
    'if [ -e "$f" ]; then grep -qx kept "$f" || exit 7; else echo kept > "$f"; fi; '
    'exec "$@"'
)
# Test-only, in the generated hub config: the notebook runs the KEEP script before its own
# command; the hub polls its servers every 2 s (JupyterHub's default is 30 s), so the drill
# waits less for the hub to notice.
CONFIG = [
    "def _keep(spawner, pod):",
    "    notebook = pod.spec.containers[0]",
    "    notebook.args = [*(notebook.command or []), *(notebook.args or [])]",
    f"    notebook.command = ['sh', '-c', {KEEP!r}, 'keep']",
    "    return pod",
    "c.KubeSpawner.modify_pod_hook = _keep",
    "c.KubeSpawner.poll_interval = 2",
]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env(devcluster, api_client, kueue, tmp_path_factory):
    kubeconfig, cluster = devcluster
    if cluster is None or "pod-runner" not in {p.name for p in cluster.status().processes}:
        pytest.skip("the dev cluster runs without the pod runner (see its `up` output)")
    tmp = tmp_path_factory.mktemp("node-loss")
    port, token = free_port(), secrets.token_hex(32)
    lines = [*hub_lines(port, token), *CONFIG]
    async with hub_in_namespace(
        api_client, kubeconfig, tmp, USERS, SPAWNER, lines, kueue_documents=kueue
    ) as hub:
        service = Service(tmp, hub, port, token)
        await asyncio.to_thread(service.start)
        try:
            yield hub, service
        finally:
            service.stop()


async def call(hub: Hub, method: str, path: str, body=None):
    return await asyncio.to_thread(hub.request, method, path, body)


async def ready(hub: Hub, user: str, name: str) -> bool:
    status, model = await call(hub, "GET", f"/users/{user}")
    server = model["servers"].get(name)
    return bool(server and server["ready"])


async def stopped(hub: Hub, user: str, name: str) -> bool:
    status, model = await call(hub, "GET", f"/users/{user}")
    return name not in model["servers"]


async def start(hub: Hub, user: str, name: str) -> None:
    status, answer = await call(hub, "POST", f"/users/{user}/servers/{name}", RTX)
    assert status in (201, 202), answer
    await wait_until(lambda: ready(hub, user, name), f"{user}/{name} ready", limit=180)


async def server_pod(core, hub: Hub, user: str, name: str):
    pods = await core.list_namespaced_pod(
        hub.namespace,
        label_selector=f"hub.jupyter.org/username={user},hub.jupyter.org/servername={name}",
    )
    return pods.items[0] if pods.items else None


def kept_files(hub: Hub, user: str) -> list[str]:
    return [
        str(p)
        for folder in hub.storage_folders.values()
        for p in folder.rglob("kept.txt")
        if user in str(p)
    ]


async def test_a_deleted_pod_shows_stopped_and_starts_again_with_its_home(env, core):
    hub, _ = env
    await start(hub, "alice", "gpu")
    assert kept_files(hub, "alice"), "the notebook wrote no file into its home folder"
    pod = await server_pod(core, hub, "alice", "gpu")
    await core.delete_namespaced_pod(pod.metadata.name, hub.namespace)
    await wait_until(lambda: stopped(hub, "alice", "gpu"), "the hub to show the server stopped")
    await start(hub, "alice", "gpu")  # the KEEP script refuses to start without the file
    again = await server_pod(core, hub, "alice", "gpu")
    assert again.metadata.uid != pod.metadata.uid
    status, answer = await call(hub, "DELETE", "/users/alice/servers/gpu", {"remove": True})
    assert status in (202, 204), answer


async def service_call(service: Service, token: str, method: str, path: str, body=None):
    def request() -> dict:
        data = json.dumps(body).encode() if body is not None else None
        sent = urllib.request.Request(
            f"{service.hub.url}{PREFIX}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {token}"},
        )
        with urllib.request.urlopen(sent, timeout=30) as response:
            return json.loads(response.read())

    return await asyncio.to_thread(request)


async def submit(service: Service, token: str, body: dict) -> dict:
    return await service_call(service, token, "POST", "api/jobs", body)


async def test_a_deleted_node_stops_the_server_and_requeues_the_job(env, core, batch):
    """bob's server on an RTX 5000 node and his job on the T4 node; both nodes deleted. The
    server shows stopped and starts on the other RTX 5000 node; the job's pod is collected, its
    Job waits for a T4 and runs again (not counted as a failure) once the node is back."""
    hub, service = env
    status, answer = await call(hub, "POST", "/users/bob/tokens", {"note": "node-loss drill"})
    assert status == 201, answer
    token = answer["token"]
    await start(hub, "bob", "gpu")
    server_node = (await server_pod(core, hub, "bob", "gpu")).spec.node_name
    body = {"name": "survivor", "command": run_long_then_short("node-loss"), **T4}
    job = await submit(service, token, body)
    first = await wait_until(lambda: running_job_pod(core, hub, job["id"]), "the job to run")
    try:
        for node in (server_node, first.spec.node_name):
            await core.delete_node(node)
        await wait_until(
            lambda: stopped(hub, "bob", "gpu"), "the hub to show the server stopped", limit=180
        )
        await start(hub, "bob", "gpu")
        assert (await server_pod(core, hub, "bob", "gpu")).spec.node_name != server_node

        async def collected():
            pods = await core.list_namespaced_pod(
                hub.namespace, label_selector=f"job-name={job['id']}"
            )
            return all(p.metadata.uid != first.metadata.uid for p in pods.items)

        await wait_until(collected, "the lost node's job pod to be collected", limit=180)
    finally:
        await topology.ensure_nodes(core, "ai-infn")
    done = await wait_until(
        lambda: finished(service, token, job["id"]), "the job to run again", limit=240
    )
    assert done["state"] == "succeeded", done
    status = (await batch.read_namespaced_job_status(job["id"], hub.namespace)).status
    assert not status.failed, status  # a lost node's pod is not one of the job's failures
    status, answer = await call(hub, "DELETE", "/users/bob/servers/gpu", {"remove": True})
    assert status in (202, 204), answer


async def running_job_pod(core, hub: Hub, job_id: str):
    pods = await core.list_namespaced_pod(hub.namespace, label_selector=f"job-name={job_id}")
    running = [p for p in pods.items if p.status.phase == "Running"]
    return running[0] if running else None


async def finished(service: Service, token: str, job_id: str):
    state = await service_call(service, token, "GET", f"api/jobs/{job_id}")
    return state if state["state"] in ("succeeded", "failed") else None
