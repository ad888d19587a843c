"""Drill: Kubernetes API errors and slowness between the hub (and the job service) and the real
API server, injected by a TLS proxy on loopback (fault_proxy.py): 429 with Retry-After, 500, slow
answers and answers lost after the server acted.

What users must see: a spawn that fails says why in words and leaves no pod; one that can
succeed on retry does, with exactly one pod; a job submission gets a 503 that says to try again,
and its retry with the same idempotency key makes exactly one Job. The hub never exits.
"""

from __future__ import annotations

import asyncio
import secrets
import urllib.error
import urllib.request

import pytest
import pytest_asyncio
from aiinfn_dev.devcluster.processes import free_port

from aiinfn_hub import labels
from tests.faults.fault_proxy import Fault
from tests.faults.proxied_hub import proxied_hub
from tests.helpers import wait_until
from tests.hub import KWOK_NOTEBOOKS
from tests.jobs_service import Service, hub_lines, submit_through_hub

pytestmark = pytest.mark.integration

USERS = {"alice": {"groups": ["cms-ml"]}, "bob": {"groups": ["cms-ml"]}}
SPAWNER = {
    "default_policy": {"accelerators": ["cpu"], "environments": "*"},
    "group_policies": {"cms-ml": {"accelerators": "*", "environments": "*", "max_accelerators": 2}},
}
# Each API request may take 3 s, a create is retried for 15 s (KubeSpawner's two settings).
TIMEOUTS = [
    "c.KubeSpawner.k8s_api_request_timeout = 3",
    "c.KubeSpawner.k8s_api_request_retry_timeout = 15",
]
PODS = r"/api/v1/namespaces/[^/]+/pods"
JOBS = r"/apis/batch/v1/namespaces/[^/]+/jobs"
UNAVAILABLE = "the cluster could not start your server right now; try again in a minute"
SERVICE_UNAVAILABLE = "the cluster cannot be reached right now; try again"
JOB_LABELS = f"{labels.MANAGED_BY}={labels.MANAGED_BY_VALUE},{labels.COMPONENT}=batch-job"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env(devcluster, api_client, kueue, tmp_path_factory):
    """(hub, proxy, job service, users' tokens): hub and service both behind the proxy."""
    kubeconfig, _ = devcluster
    tmp = tmp_path_factory.mktemp("api-faults")
    port, token = free_port(), secrets.token_hex(32)
    lines = [
        *TIMEOUTS,
        *KWOK_NOTEBOOKS,
        *hub_lines(port, token, rate_limit=200.0, rate_limit_burst=400),
    ]
    async with proxied_hub(
        api_client, kubeconfig, tmp, USERS, SPAWNER, lines, kueue_documents=kueue
    ) as (hub, proxy):
        service = Service(tmp, hub, port, token, kubeconfig=tmp / "proxy.kubeconfig")
        await asyncio.to_thread(service.start)
        try:
            tokens = {}
            for user in USERS:
                status, body = await call(hub, "POST", f"/users/{user}/tokens", {"note": "drill"})
                tokens[user] = body["token"]
            yield hub, proxy, service, tokens
        finally:
            proxy.clear()
            service.stop()


async def call(hub, method, path, body=None):
    return await asyncio.to_thread(hub.request, method, path, body)


async def spawn(hub, user: str, server: str) -> tuple[bool, str]:
    """(ready, last message) of a named CPU server's spawn through the REST API."""
    status, answer = await call(hub, "POST", f"/users/{user}/servers/{server}", {})
    if status == 201:
        return True, ""
    if status != 202:
        return False, answer.get("message", str(answer)) if isinstance(answer, dict) else answer
    events = await asyncio.to_thread(hub.events, f"/users/{user}/servers/{server}/progress")
    return bool(events[-1].get("ready")), events[-1].get("message", "")


async def server_pods(core, namespace: str, user: str, server: str) -> list:
    pods = await core.list_namespaced_pod(namespace)
    wanted = {"hub.jupyter.org/username": user, "hub.jupyter.org/servername": server}
    return [
        p
        for p in pods.items
        if wanted.items() <= (p.metadata.annotations or {}).items()
        and not p.metadata.deletion_timestamp
    ]


async def remove(hub, user: str, server: str) -> None:
    await call(hub, "DELETE", f"/users/{user}/servers/{server}", {"remove": True})

    async def gone():
        status, model = await call(hub, "GET", f"/users/{user}")
        return server not in model.get("servers", {})

    await wait_until(gone, f"server {server} removed")


def hub_alive(hub) -> bool:
    return hub.process.poll() is None and hub.request("GET", "/")[0] == 200


async def test_a_failed_pod_create_fails_the_spawn_in_words_and_leaves_nothing(env, core):
    hub, proxy, _, _ = env
    fault = proxy.inject(Fault("POST", PODS, status=500))
    try:
        ready, message = await spawn(hub, "alice", "f500")
    finally:
        proxy.faults.remove(fault)
    assert (ready, message) == (False, UNAVAILABLE)
    assert fault.hits == 1  # a failure is not retried: the user is told at once
    assert await server_pods(core, hub.namespace, "alice", "f500") == []
    assert await asyncio.to_thread(hub_alive, hub)
    # The pod (its environment holds the server's API token) is not in the log.
    assert "JUPYTERHUB_API_TOKEN" not in hub.log()
    # The user can start again once the API server answers.
    ready, message = await spawn(hub, "alice", "f500")
    assert ready, message
    assert len(await server_pods(core, hub.namespace, "alice", "f500")) == 1
    await remove(hub, "alice", "f500")


async def test_a_throttled_pod_create_waits_its_retry_after_and_makes_one_pod(env, core):
    hub, proxy, _, _ = env
    fault = proxy.inject(Fault("POST", PODS, status=429, retry_after=1, times=2))
    try:
        ready, message = await spawn(hub, "bob", "f429")
    finally:
        proxy.faults.remove(fault)
    assert ready, message
    creates = proxy.requests("POST", PODS)
    assert [c.status for c in creates[-3:]] == [429, 429, 201]
    # Each retry came after the Retry-After the API server asked for.
    assert all(b.at - a.at >= 1.0 for a, b in zip(creates[-3:], creates[-2:], strict=False))
    assert len(await server_pods(core, hub.namespace, "bob", "f429")) == 1
    assert await asyncio.to_thread(hub_alive, hub)
    await remove(hub, "bob", "f429")


async def test_a_create_acted_on_after_the_spawner_gave_up_on_it_leaves_one_pod(env, core):
    hub, proxy, _, _ = env
    # The API server makes the first create's pod, but its answer comes after the spawner's 3 s
    # request timeout: the spawner has tried again meanwhile and meets the pod it made (409),
    # deletes it and makes it anew.
    fault = proxy.inject(Fault("POST", PODS, delay=5.0, after_upstream=True, times=1))
    try:
        ready, message = await spawn(hub, "alice", "slow")
    finally:
        proxy.faults.remove(fault)
    assert ready, message
    assert len(proxy.requests("POST", PODS)) >= 2
    assert len(await server_pods(core, hub.namespace, "alice", "slow")) == 1
    assert await asyncio.to_thread(hub_alive, hub)
    await remove(hub, "alice", "slow")


def job(name: str) -> dict:
    return {"name": name, "command": ["python", "-c", "print(1)"], "idempotency_key": f"k-{name}"}


async def jobs_named(batch, namespace: str, job_id: str) -> int:
    jobs = await batch.list_namespaced_job(namespace, label_selector=JOB_LABELS)
    return sum(1 for j in jobs.items if j.metadata.name == job_id)


@pytest.mark.parametrize(
    "name, fault",
    [
        ("lost", Fault("POST", JOBS, status=500, after_upstream=True, times=1)),
        ("throttled", Fault("POST", JOBS, status=429, retry_after=1, times=1)),
        ("failed", Fault("POST", JOBS, status=500, times=1)),
    ],
)
async def test_a_submission_the_api_server_failed_is_a_503_and_its_retry_makes_one_job(
    env, batch, name, fault
):
    hub, proxy, service, tokens = env
    proxy.inject(fault)
    try:
        status, answer = await asyncio.to_thread(
            submit_through_hub, hub, tokens["alice"], job(name)
        )
    finally:
        proxy.faults.remove(fault)
    assert (status, answer["message"]) == (503, SERVICE_UNAVAILABLE)
    assert fault.hits == 1
    status, again = await asyncio.to_thread(submit_through_hub, hub, tokens["alice"], job(name))
    # Lost: the Job was made, the retry finds it (200); else the retry makes it (201).
    assert status == (200 if fault.after_upstream else 201), again
    assert await jobs_named(batch, hub.namespace, again["id"]) == 1
    assert service.process.poll() is None and await asyncio.to_thread(hub_alive, hub)


async def test_failing_watches_back_off_and_the_inventory_recovers(env):
    hub, proxy, _, _ = env
    # The inventory's pod watch of all namespaces: its stream broken, then 4 lists/watches fail.
    fault = proxy.inject(Fault("GET", r"/api/v1/pods", status=500, times=4))
    try:
        await asyncio.to_thread(proxy.cut_streams)

        async def answered_again():
            if fault.hits < 4:
                return None
            last_fault = proxy.requests("GET", r"/api/v1/pods", True)[-1].at
            answered = proxy.requests("GET", r"/api/v1/pods", False)
            return any(s.at > last_fault and s.status == 200 for s in answered)

        await wait_until(answered_again, "the pod watch to be retried and answered again")
    finally:
        proxy.faults.remove(fault)
    tries = [s.at for s in proxy.requests("GET", r"/api/v1/pods", True)[-4:]]
    gaps = [b - a for a, b in zip(tries, tries[1:], strict=False)]
    # Bounded exponential backoff: each wait at least as long as the one before's lower bound.
    assert gaps == sorted(gaps), gaps
    assert await asyncio.to_thread(hub_alive, hub)
    assert await asyncio.to_thread(watch_metric, hub, "errors_total") >= 4
    assert await asyncio.to_thread(watch_metric, hub, "synced") == 1.0


def watch_metric(hub, name: str) -> float:
    """aiinfn_inventory_watch_<name>{resource="pods"} from the hub's /hub/metrics."""
    request = urllib.request.Request(
        f"{hub.url}/hub/metrics", headers={"Authorization": f"token {hub.token}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read().decode()
    line = f'aiinfn_inventory_watch_{name}{{resource="pods"}} '
    return float(text.split(line, 1)[1].split()[0])
