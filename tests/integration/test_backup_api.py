"""The backup service's REST API through a real JupyterHub (tokens, the proxy's route), the
service process running as its own ServiceAccount (a namespaced Role, never the admin's nor the
hub's), its Jobs run for real by the pod runner: the demo's story (a deleted notebook restored
into ~/restored/<archive>/), the 409 when it is there already, and refusals that write
nothing."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from aiinfn_dev.devcluster.processes import free_port
from kubernetes_asyncio import client

from aiinfn_hub.identity import IdentityStore
from aiinfn_hub.services.backup import paths
from tests import backup_cluster
from tests.backup_cluster import PREFIX, BackupWorld, tree
from tests.helpers import wait_until
from tests.hub import Hub, hub_in_namespace

pytestmark = pytest.mark.integration

USERS = {
    "alice": {"groups": ["cms-ml"]},
    "bob": {"groups": []},
    "ada": {"admin": True, "groups": []},
}


@dataclass
class Env:
    hub: Hub
    world: BackupWorld
    tokens: dict[str, str] = field(default_factory=dict)

    def call(self, user: str | None, method: str, path: str, body: Any = None):
        """(status, JSON body, headers) of one API call through the hub's proxy."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"token {self.tokens[user]}"} if user else {}
        request = urllib.request.Request(
            f"{self.hub.url}{PREFIX}{path}", data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=180) as response:
                return response.status, json.loads(response.read() or b"{}"), response.headers
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}"), error.headers

    async def api(self, user: str | None, method: str, path: str, body: Any = None):
        return await asyncio.to_thread(self.call, user, method, path, body)

    async def finished(self, user: str, run_id: str) -> dict | None:
        status, body, _ = await self.api(user, "GET", f"api/runs/{run_id}")
        assert status == 200, body
        return body if body["state"] != "running" else None

    async def wait(self, user: str, run_id: str, api_client: Any) -> dict:
        """The run's status once it has ended; a failed one with its pod's exit codes and log
        (read as the admin, for the test's report)."""
        body = await wait_until(
            lambda: self.finished(user, run_id), f"run {run_id}", limit=backup_cluster.JOB_LIMIT
        )
        if body["state"] == "failed":
            core = client.CoreV1Api(api_client)
            body["pod"] = await backup_cluster.pod_report(core, self.hub.namespace, run_id)
        return body


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env(devcluster, api_client, tmp_path_factory):
    backup_cluster.require_backup_runner(devcluster)
    kubeconfig, _ = devcluster
    tmp = tmp_path_factory.mktemp("backup-api")
    port, token = free_port(), secrets.token_hex(32)
    lines = backup_cluster.hub_lines(
        port, token, job_resources={"cpu": "100m", "memory": "256Mi"}, rate_limit=100.0
    )
    async with hub_in_namespace(api_client, kubeconfig, tmp, USERS, {}, lines) as hub:
        world = backup_cluster.world_in(devcluster, hub.namespace, hub.storage_folders)
        account = await backup_cluster.service_kubeconfig(
            api_client, hub.namespace, kubeconfig, tmp / "backup-service.kubeconfig"
        )
        service = backup_cluster.ServiceProcess(tmp, hub.url, port, token, account)
        try:
            await asyncio.to_thread(service.start)
            environment = Env(hub, world)
            for user in USERS:
                status, body = await asyncio.to_thread(
                    hub.request, "POST", f"/users/{user}/tokens", {"note": "backup tests"}
                )
                assert status == 201, body
                environment.tokens[user] = body["token"]
            yield environment
        finally:
            service.stop()


async def test_a_deleted_notebook_is_restored_through_the_api(env: Env, api_client, batch):
    namespace = env.hub.namespace
    identity = await IdentityStore(api_client, namespace).identity("alice", ["cms-ml"])
    outside = env.world.target.parent / "other-project"
    outside.mkdir()
    home = backup_cluster.make_home(env.world, "alice", identity.uid, outside)

    assert (await env.api(None, "GET", "api/repositories/home/alice/archives"))[0] == 401
    status, body, _ = await env.api("alice", "GET", "api/repositories/home/alice/archives")
    assert (status, body) == (200, {"archives": []})
    status, started, headers = await env.api(
        "alice", "POST", "api/backups", {"kind": "home", "name": "alice"}
    )
    assert status == 202 and headers["Location"] == f"{PREFIX}api/runs/{started['id']}"
    backed_up = await env.wait("alice", started["id"], api_client)
    assert backed_up["state"] == "succeeded", backed_up

    status, body, _ = await env.api("alice", "GET", "api/repositories/home/alice/archives")
    assert status == 200 and [a["name"] for a in body["archives"]] == [started["archive"]]
    archive = started["archive"]
    listing = f"api/repositories/home/alice/archives/{archive}/paths"
    status, body, _ = await env.api("alice", "GET", f"{listing}?folder=work")
    assert status == 200
    assert [(e["path"], e["type"]) for e in body["entries"]] == [
        ("work/data.bin", "file"),
        ("work/deep", "folder"),
    ]

    os.remove(home / "notebook.ipynb")
    restore = {"kind": "home", "name": "alice", "archive": archive, "path": "notebook.ipynb"}
    status, run, _ = await env.api("alice", "POST", "api/restores", restore)
    assert status == 202, run
    restored = await env.wait("alice", run["id"], api_client)
    assert restored["state"] == "succeeded", restored
    restored = home / paths.RESTORED_FOLDER / archive / "notebook.ipynb"
    assert restored.read_text() == '{"cells": [], "metadata": {}}\n'

    before = tree(home)
    status, again, _ = await env.api("alice", "POST", "api/restores", restore)
    assert status == 202
    refused = await env.wait("alice", again["id"], api_client)
    assert refused["state"] == "refused" and refused["status"] == 409
    assert "already exists; nothing was restored" in refused["message"]
    assert tree(home) == before

    jobs = sorted(j.metadata.name for j in (await batch.list_namespaced_job(namespace)).items)
    for user, method, path, body, expected in [
        ("bob", "GET", "api/repositories/home/alice/archives", None, 403),
        ("bob", "GET", f"{listing}?folder=work", None, 403),
        ("bob", "POST", "api/restores", restore, 403),
        ("bob", "POST", "api/backups", {"kind": "home", "name": "alice"}, 403),
        ("bob", "GET", f"api/runs/{run['id']}", None, 404),
        ("alice", "POST", "api/restores", {**restore, "folder": "../bob"}, 403),
        ("alice", "POST", "api/restores", {**restore, "path": "../../etc"}, 400),
        ("alice", "POST", "api/restores", {**restore, "owner": "bob"}, 400),
        ("alice", "POST", "api/restores", {**restore, "archive": "2020-01-01T000000Z"}, 404),
        ("alice", "GET", f"{listing}?folder=../..", None, 400),
        ("alice", "GET", "api/repositories/project/qml/archives", None, 403),
        ("alice", "GET", "api/runs/nothing-like-an-id", None, 404),
    ]:
        status, answer, _ = await env.api(user, method, path, body)
        assert status == expected, (path, answer)
        assert set(answer) == {"status", "message"} and answer["status"] == expected
    after = sorted(j.metadata.name for j in (await batch.list_namespaced_job(namespace)).items)
    assert after == jobs
    # The admin sees alice's archives and runs.
    status, body, _ = await env.api("ada", "GET", "api/repositories/home/alice/archives")
    assert status == 200 and [a["name"] for a in body["archives"]] == [archive]
    assert (await env.api("ada", "GET", f"api/runs/{run['id']}"))[1]["state"] == "succeeded"


async def test_the_openapi_document_and_health_are_public(env: Env):
    status, document, _ = await env.api(None, "GET", "api/openapi.json")
    assert status == 200 and document["info"]["title"] == "aiinfn-hub backup service"
    status, health, _ = await env.api(None, "GET", "health")
    assert (status, health) == (200, {"status": "ok"})
