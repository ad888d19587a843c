"""The backup service's page at /services/backup/ through a real JupyterHub (its login, the
service's OAuth cookie, the proxy's route), the service running as its own ServiceAccount, its
Jobs run for real by the pod runner. One hub, one service and one backup of alice's home (made
through the API by the admin, standing for last night's) serve the module's tests: alice
browses and restores with the page's forms; every refusal is a page with a clear message and
its 4xx, with no Job created and nothing written in her home; a restore whose destination
exists says so (409); the admin sees the records and restores alice's file into a folder of his
choosing. The page in a real browser, in the demo: tests/e2e/test_browser.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from aiinfn_dev.devcluster.processes import free_port
from kubernetes_asyncio import client

from aiinfn_hub.identity import IdentityStore
from aiinfn_hub.services.backup import paths, repos
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
_XSRF = re.compile(r'name="_xsrf" value="([^"]+)"')
_STATE = re.compile(r'id="run-state" data-state="([a-z]+)"')


@dataclass
class PageEnv:
    hub: Hub
    world: BackupWorld
    home: Path
    uid: int
    archive: str
    admin_token: str

    def get(self, user: str, path: str) -> tuple[int, str]:
        """(status, HTML) of a page, as the user's logged-in browser (cookies) sees it."""
        return self.hub.page(f"{PREFIX}{path}", user)

    def post(self, user: str, path: str, fields: dict[str, str]) -> tuple[int, str, str]:
        """(status, HTML, final URL) of a form sent by the user's browser (redirects followed)."""
        data = urllib.parse.urlencode(fields).encode()
        request = urllib.request.Request(f"{self.hub.url}{PREFIX}{path}", data=data)
        try:
            with self.hub.browsers[user].open(request, timeout=180) as response:
                return response.status, response.read().decode(), response.url
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(), error.url

    def xsrf(self, user: str) -> str:
        status, html = self.get(user, f"?kind=home&name={user}")
        assert status == 200, html
        return _XSRF.search(html).group(1)

    def folder_path(self, folder: str = "") -> str:
        query = {"kind": "home", "name": "alice", "archive": self.archive, "folder": folder}
        return "?" + urllib.parse.urlencode(query)

    async def run_page(self, user: str, run_path: str) -> tuple[int, str, str] | None:
        """(status, HTML, state) of a run's page once the run has ended."""
        status, html = await asyncio.to_thread(self.get, user, run_path)
        state = _STATE.search(html).group(1)
        return None if state == "running" else (status, html, state)

    async def finished(self, user: str, run_path: str) -> tuple[int, str, str]:
        return await wait_until(
            lambda: self.run_page(user, run_path), run_path, limit=backup_cluster.JOB_LIMIT
        )


def api(hub: Hub, token: str, method: str, path: str, body: bytes | None = None) -> dict:
    request = urllib.request.Request(
        f"{hub.url}{PREFIX}{path}",
        data=body,
        method=method,
        headers={"Authorization": f"token {token}"},
    )
    with urllib.request.urlopen(request, timeout=180) as response:
        return json.loads(response.read())


async def backed_up(hub: Hub, token: str) -> str:
    """A backup of alice's home started through the API by the admin; its archive once done."""
    body = b'{"kind": "home", "name": "alice"}'
    run = await asyncio.to_thread(api, hub, token, "POST", "api/backups", body)

    async def ended() -> dict | None:
        state = await asyncio.to_thread(api, hub, token, "GET", f"api/runs/{run['id']}")
        return state if state["state"] != "running" else None

    done = await wait_until(ended, "alice's backup", limit=backup_cluster.JOB_LIMIT)
    assert done["state"] == "succeeded", done
    return run["archive"]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env(devcluster, api_client, tmp_path_factory):
    backup_cluster.require_backup_runner(devcluster)
    kubeconfig, _ = devcluster
    tmp = tmp_path_factory.mktemp("backup-page")
    port, token = free_port(), secrets.token_hex(32)
    lines = backup_cluster.hub_lines(
        port,
        token,
        job_resources={"cpu": "100m", "memory": "256Mi"},
        rate_limit=100.0,
        schedule_interval=1.0,
    )
    async with hub_in_namespace(api_client, kubeconfig, tmp, USERS, {}, lines) as hub:
        world = backup_cluster.world_in(devcluster, hub.namespace, hub.storage_folders)
        account = await backup_cluster.service_kubeconfig(
            api_client, hub.namespace, kubeconfig, tmp / "backup-service.kubeconfig"
        )
        service = backup_cluster.ServiceProcess(tmp, hub.url, port, token, account)
        try:
            await asyncio.to_thread(service.start)
            identity = await IdentityStore(api_client, hub.namespace).identity("alice", ["cms-ml"])
            outside = world.target.parent / "other-project"
            outside.mkdir()
            home = backup_cluster.make_home(world, "alice", identity.uid, outside)
            status, answer = await asyncio.to_thread(
                hub.request, "POST", "/users/ada/tokens", {"note": "backup page tests"}
            )
            assert status == 201, answer
            archive = await backed_up(hub, answer["token"])
            for user in USERS:
                await asyncio.to_thread(hub.login, user)
            yield PageEnv(hub, world, home, identity.uid, archive, answer["token"])
        finally:
            service.stop()


async def job_names(batch: client.BatchV1Api, namespace: str) -> list[str]:
    return sorted(j.metadata.name for j in (await batch.list_namespaced_job(namespace)).items)


async def test_alice_browses_restores_and_every_refusal_is_a_clear_4xx(env: PageEnv, batch):
    status, html = await asyncio.to_thread(env.get, "alice", "")
    assert status == 200 and '<nav class="navbar' in html, html
    assert 'data-kind="home" data-name="alice"' in html and 'data-name="cms-ml"' in html
    assert 'id="records"' not in html
    status, html = await asyncio.to_thread(env.get, "alice", "?kind=home&name=alice")
    assert status == 200 and f'data-archive="{env.archive}"' in html, html
    status, html = await asyncio.to_thread(env.get, "alice", env.folder_path("work"))
    assert status == 200, html
    assert re.findall(r'data-path="([^"]+)" data-type="([a-z]+)"', html) == [
        ("work/data.bin", "file"),
        ("work/deep", "folder"),
    ]
    xsrf = _XSRF.search(html).group(1)
    restore = {"_xsrf": xsrf, "kind": "home", "name": "alice", "archive": env.archive}
    restore["path"] = "run.sh"
    status, html, url = await asyncio.to_thread(env.post, "alice", "restore", restore)
    assert status == 200 and "/runs/restore-home-" in url, html
    run_path = url.split(PREFIX, 1)[1]
    status, html, state = await env.finished("alice", run_path)
    assert (status, state) == (200, "succeeded"), html
    where = f"/home/jovyan/{paths.RESTORED_FOLDER}/{env.archive}/run.sh"
    assert f'id="destination">{where}<' in html
    restored = env.home / paths.RESTORED_FOLDER / env.archive / "run.sh"
    assert restored.read_text() == (env.home / "run.sh").read_text()
    assert restored.stat().st_mode & 0o777 == 0o755
    # A folder, from its own listing's "Restore this folder": its symlink comes back a symlink.
    status, html = await asyncio.to_thread(env.get, "alice", env.folder_path("work/deep"))
    assert status == 200 and 'data-path="work/deep/link-to-notebook" data-type="symlink"' in html
    folder = {**restore, "path": "work/deep"}
    status, html, url = await asyncio.to_thread(env.post, "alice", "restore", folder)
    status, html, state = await env.finished("alice", url.split(PREFIX, 1)[1])
    assert (status, state) == (200, "succeeded"), html
    link = env.home / paths.RESTORED_FOLDER / env.archive / "work/deep/link-to-notebook"
    assert link.is_symlink() and os.readlink(link) == "../../notebook.ipynb"

    before, jobs = tree(env.home), await job_names(batch, env.hub.namespace)
    await refusals(env, restore, run_path)
    assert tree(env.home) == before
    assert await job_names(batch, env.hub.namespace) == jobs

    status, html, url = await asyncio.to_thread(env.post, "alice", "restore", restore)
    status, html, state = await env.finished("alice", url.split(PREFIX, 1)[1])
    assert (status, state) == (409, "refused"), html
    assert "already exists; nothing was restored" in html
    assert tree(env.home) == before


async def refusals(env: PageEnv, restore: dict[str, str], alice_run: str) -> None:
    """Each refusal: its status, a page in the hub's look with the message, nothing done."""
    archive = env.archive
    cases = [
        ("bob", "GET", "?kind=home&name=alice", 403, "you may use the backups of your own"),
        ("bob", "GET", env.folder_path(), 403, "you may use the backups of your own"),
        ("bob", "POST", ("restore", {}), 403, "you may use the backups of your own"),
        ("bob", "POST", ("backup", {}), 403, "you may use the backups of your own"),
        ("bob", "GET", alice_run, 404, "no backup or restore"),
        ("alice", "POST", ("restore", {"folder": "../bob"}), 403, "only admins choose where"),
        ("alice", "POST", ("restore", {"path": "../../etc"}), 400, "'..' parts"),
        ("alice", "POST", ("restore", {"archive": "2020-01-01T000000Z"}), 404, "no archive"),
        ("alice", "POST", ("restore", {"_xsrf": "forged"}), 403, "XSRF check failed"),
        ("alice", "GET", env.folder_path("../.."), 400, "'..' parts"),
        ("alice", "GET", f"?kind=home&name=alice&archive={archive}.x", 404, "no archive"),
        ("alice", "GET", "?kind=project&name=qml", 403, "you may use the backups of your own"),
        ("alice", "GET", "?kind=disk&name=alice", 400, "'home' or 'project'"),
        ("alice", "GET", "runs/nothing-like-an-id", 404, "no backup or restore"),
    ]
    for user, method, target, expected, message in cases:
        if method == "GET":
            status, html = await asyncio.to_thread(env.get, user, target)
        else:
            path, changes = target
            fields = {**restore, "_xsrf": env.xsrf(user), **changes}
            status, html, _ = await asyncio.to_thread(env.post, user, path, fields)
        assert status == expected, (user, target, html[-2000:])
        error = re.search(r'id="error">([^<]*)<', html)
        assert error and message in error.group(1).replace("&#39;", "'"), (target, html[-2000:])
        assert '<nav class="navbar' in html


async def test_the_admin_sees_the_records_and_restores_into_a_folder_he_picks(env: PageEnv):
    key = repos.home("alice").key

    async def recorded() -> str | None:
        status, html = await asyncio.to_thread(env.get, "ada", "")
        assert status == 200, html
        return html if f'data-key="{key}"' in html else None

    html = await wait_until(recorded, "alice's record on the admin's page")
    row = html.split(f'data-key="{key}"', 1)[1].split("</tr>", 1)[0]
    assert "never" not in row and "B</td>" in row, row
    status, html = await asyncio.to_thread(env.get, "bob", "")
    assert status == 200 and 'id="records"' not in html and 'id="open-repository"' not in html

    status, html = await asyncio.to_thread(env.get, "ada", env.folder_path())
    assert status == 200 and 'data-path="private.txt"' in html and 'name="folder"' in html
    fields = {"_xsrf": _XSRF.search(html).group(1), "kind": "home", "name": "alice"}
    fields.update(archive=env.archive, path="private.txt", folder="from-admin")
    status, html, url = await asyncio.to_thread(env.post, "ada", "restore", fields)
    assert status == 200, html
    status, html, state = await env.finished("ada", url.split(PREFIX, 1)[1])
    assert (status, state) == (200, "succeeded"), html
    restored = env.home / "from-admin" / "private.txt"
    assert restored.read_text() == "mine\n" and restored.stat().st_uid == env.uid
