"""Fault drill: the hub killed (SIGKILL, by pid) and restarted with servers running, pending and
half-created, on the real control plane with the shipped RBAC and a real PostgreSQL ledger.

The seams are real spawns held at a chosen step by test-only pod changes in the generated hub
config: `held*` servers stop in the pod hook, after their storage, uid/gids and access-token
Secret are written and before their pod is created (half-created); `gated*` pods carry a
scheduling gate, so they exist but are never scheduled until the test lifts it (pending).
`gated-late` is lifted while the hub is down: its pod starts, its notebook cannot reach the hub
and crash-loops, and the new hub finds it running but not ready.

Only the hub process dies (as its pod would): its proxy keeps routing, and the new hub replaces
it (the proxy's pid file), from the same database. The drill runs once (the `drill` fixture);
each test asserts one thing users or admins see afterwards.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

# ruff: noqa: E402 (the imports below need psycopg)
psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (docs/accounting.md)")

from psycopg import AsyncConnection

from aiinfn_hub import labels, tokens
from aiinfn_hub.accounting import settings
from tests.helpers import wait_until
from tests.hub import KWOK_PLAYED, Hub, hub_in_namespace, start_hub, stop_hub
from tests.postgres import Postgres, create_database, postgres  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration

GATE = "tests.aiinfn.infn.it/gate"
USERS = {
    "alice": {"groups": ["cms-ml"]},
    "bob": {"groups": ["cms-ml"]},
    "carol": {"groups": ["lhcb-flashsim"]},
    "dora": {"groups": ["cms-ml"]},
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
    },
    # The pending pods are gated, never unschedulable: the watchdog must not give up on them.
    "fail_fast_seconds": 600.0,
}
T4 = {"accelerator": "t4"}
# The servers the restarted hub must stop: half-created, pending, pending and crash-looping.
PENDING = ("alice", "held"), ("dora", "held"), ("bob", "gated"), ("carol", "gated-late")


def hooks(folder: Path) -> list[str]:
    """Config lines: auth_state with an access token at login (so spawns write the token
    Secret, as with the real identity provider), and the pod hook that holds the seams. Only
    `gated-late` needs a real notebook (it crash-loops); kwok plays the other pods."""
    return [
        "c.Authenticator.enable_auth_state = True",
        "def _token(authenticator, handler, authentication):",
        "    authentication['auth_state'] = {'access_token': 'drill-' + authentication['name']}",
        "    return authentication",
        "c.Authenticator.post_auth_hook = _token",
        "import asyncio as _asyncio, pathlib as _pathlib",
        f"_HELD = _pathlib.Path({str(folder)!r})",
        "async def _fault_hook(spawner, pod):",
        "    if spawner.name.startswith('held'):",
        "        (_HELD / f'{spawner.user.name}-{spawner.name}.waiting').touch()",
        "        while not (_HELD / 'release').exists():",
        "            await _asyncio.sleep(0.2)",
        "    if spawner.name.startswith('gated'):",
        f"        pod.spec.scheduling_gates = [{{'name': {GATE!r}}}]",
        "    if spawner.name != 'gated-late':",
        "        pod.metadata.annotations = {**(pod.metadata.annotations or {}),"
        f" **{KWOK_PLAYED!r}}}",
        "    return pod",
        "c.KubeSpawner.modify_pod_hook = _fault_hook",
    ]


@dataclass
class Drill:
    hub: Hub  # the restarted hub
    first: Hub  # the killed one
    dsn: str
    uids: dict[str, str]  # server ("user/name") -> its pod's uid, for the pods made before
    secrets_before: set[str]
    claims_before: set[str]


async def call(hub: Hub, method: str, path: str, body=None):
    return await asyncio.to_thread(hub.request, method, path, body)


async def server(hub: Hub, user: str, name: str) -> dict | None:
    status, model = await call(hub, "GET", f"/users/{user}")
    assert status == 200, model
    return model["servers"].get(name)


async def pods(core, namespace: str) -> dict[str, object]:
    """Live pods by server ("user/name")."""
    found = {}
    for pod in (await core.list_namespaced_pod(namespace)).items:
        notes = pod.metadata.annotations or {}
        if not pod.metadata.deletion_timestamp and "hub.jupyter.org/username" in notes:
            key = f"{notes['hub.jupyter.org/username']}/{notes.get('hub.jupyter.org/servername')}"
            found[key] = pod
    return found


async def token_secrets(core, namespace: str) -> set[str]:
    found = await core.list_namespaced_secret(namespace)
    return {s.metadata.name for s in found.items if s.metadata.name.startswith("aiinfn-token")}


async def ledger_rows(dsn: str) -> list[tuple[str, str]]:
    async with await AsyncConnection.connect(dsn) as connection:
        cursor = await connection.execute("SELECT allocation, phase FROM accounting_events")
        return [tuple(row) for row in await cursor.fetchall()]


async def ready(hub: Hub, user: str, name: str) -> bool:
    model = await server(hub, user, name)
    return bool(model and model["ready"])


async def set_up_servers(hub: Hub, core, folder: Path) -> None:
    """alice: `run` running, `held` half-created; dora: `held` half-created (her only one);
    bob: `gated` pending; carol: `gated-late` pending (lifted while the hub is down)."""
    wanted = ("alice", "run"), ("alice", "held"), ("dora", "held"), ("bob", "gated")
    wanted += (("carol", "gated-late"),)
    answers = await asyncio.gather(
        *(call(hub, "POST", f"/users/{user}/servers/{name}", T4) for user, name in wanted)
    )
    assert all(status in (201, 202) for status, _ in answers), answers
    await wait_until(lambda: ready(hub, "alice", "run"), "alice's server to be ready", limit=180)

    async def seams_reached() -> bool:
        waiting = {p.name for p in folder.glob("*.waiting")}
        found = await pods(core, hub.namespace)
        return {"alice-held.waiting", "dora-held.waiting"} <= waiting and {
            "bob/gated",
            "carol/gated-late",
        } <= set(found)

    await wait_until(seams_reached, "the held spawns at their pod hook, the gated pods made")


async def lift_gate(core, namespace: str, pod_name: str) -> None:
    await core.patch_namespaced_pod(pod_name, namespace, {"spec": {"schedulingGates": None}})


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def drill(devcluster, api_client, postgres, tmp_path_factory):  # noqa: F811
    from kubernetes_asyncio import client

    core = client.CoreV1Api(api_client)
    kubeconfig, cluster = devcluster
    if cluster is None or "pod-runner" not in {p.name for p in cluster.status().processes}:
        pytest.skip("the drill needs notebooks that really run (the dev cluster's pod runner)")
    name = create_database(postgres)
    dsn, env = postgres.dsn(name), {settings.URL_ENV: postgres.url(name)}
    env["JUPYTERHUB_CRYPT_KEY"] = secrets.token_hex(32)
    folder = tmp_path_factory.mktemp("hub-restart")
    config = [*hooks(folder)]
    async with hub_in_namespace(
        api_client, kubeconfig, folder, USERS, SPAWNER, config, env
    ) as first:
        before = {
            "secrets": await token_secrets(core, first.namespace),
            "claims": {
                c.metadata.name
                for c in (await core.list_namespaced_persistent_volume_claim(first.namespace)).items
            },
        }
        await set_up_servers(first, core, folder)
        made = await pods(core, first.namespace)
        uids = {key: pod.metadata.uid for key, pod in made.items()}
        os.kill(first.process.pid, signal.SIGKILL)  # the hub alone: its proxy runs on
        await asyncio.to_thread(first.process.wait, 30)
        await lift_gate(core, first.namespace, made["carol/gated-late"].metadata.name)

        async def late_runs() -> bool:
            late = (await pods(core, first.namespace)).get("carol/gated-late")
            statuses = (late.status.container_statuses or []) if late else []
            return any(c.restart_count or c.state.terminated for c in statuses)

        # Its notebook starts, finds no hub to talk to, and exits: it crash-loops until the
        # hub is back (what a server that starts during a hub outage does).
        await wait_until(late_runs, "carol's notebook to start and fail without a hub", limit=120)
        (folder / "release").touch()  # a held hook, if any survived, would go on now
        restarted = folder / "restarted"
        restarted.mkdir()
        same_state = [
            f"c.JupyterHub.db_url = 'sqlite:///{folder / 'hub.sqlite'}'",
            f"c.JupyterHub.cookie_secret_file = {str(folder / 'cookie_secret')!r}",
            f"c.ConfigurableHTTPProxy.pid_file = {str(folder / 'proxy.pid')!r}",
        ]
        hub, responder = await asyncio.to_thread(
            start_hub,
            restarted,
            first.kubeconfig,
            first.namespace,
            USERS,
            SPAWNER,
            [*config, *same_state],
            env,
        )
        hub.storage_folders = first.storage_folders
        try:
            yield Drill(
                hub,
                first,
                dsn,
                uids,
                before["secrets"],
                before["claims"],
            )
        finally:
            await asyncio.to_thread(stop_hub, hub, responder)
            with_proxy = first.process.pid
            try:
                os.killpg(with_proxy, signal.SIGKILL)  # the first proxy, if the new hub left it
            except ProcessLookupError:
                pass


async def settled(drill: Drill, core) -> dict[str, object]:
    """Wait until the new hub has decided about every server: ready, or gone with its pod."""

    async def decided():
        found = await pods(core, drill.hub.namespace)
        for user, name in PENDING:
            model = await server(drill.hub, user, name)
            if model is not None or f"{user}/{name}" in found:
                return None
        return found

    # The pending server is stopped once the hub has waited its http_timeout for it.
    return await wait_until(decided, "the restarted hub to stop the pending servers", limit=120)


async def test_running_servers_stay_tracked_and_reachable(drill, core):
    model = await server(drill.hub, "alice", "run")
    assert model["ready"] and model["pending"] is None, model

    def through_proxy() -> int:
        url = f"{drill.hub.url}/user/alice/run/api/status"
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status

    assert await asyncio.to_thread(through_proxy) == 200
    found = await pods(core, drill.hub.namespace)
    assert found["alice/run"].metadata.uid == drill.uids["alice/run"]  # the same pod, kept
    assert "still running" in drill.hub.log()


async def test_pending_and_half_created_servers_end_cleanly(drill, core):
    found = await settled(drill, core)
    assert set(found) == {"alice/run"}
    secrets_now = await token_secrets(core, drill.hub.namespace)
    # alice's stays (her running server mounts it); the others' are gone.
    assert secrets_now - drill.secrets_before == {tokens.secret_name("alice")}
    claims = await core.list_namespaced_persistent_volume_claim(drill.hub.namespace)
    assert {c.metadata.name for c in claims.items} == drill.claims_before
    # Not asserted: the server API tokens of the starts cut short stay in the hub's database
    # (JupyterHub restores no spawner's api_token after a restart, so its stop cannot find
    # them); docs/operations.md, "Hub restarts".
    # The user can start again at once.
    status, answer = await call(drill.hub, "POST", "/users/bob/servers/again", T4)
    assert status in (201, 202), answer
    await wait_until(lambda: ready(drill.hub, "bob", "again"), "bob's new server", limit=180)
    status, answer = await call(drill.hub, "DELETE", "/users/bob/servers/again", {"remove": True})
    assert status in (202, 204), answer


async def test_no_reservation_leaked_and_limits_hold(drill, core):
    await settled(drill, core)

    async def form_equals_recount():
        status, page = await asyncio.to_thread(drill.hub.page, "/hub/spawn", "alice")
        assert status == 200, page[:300]
        block = page.split('data-accelerator="t4"', 1)[1].split('class="aiinfn-choice', 1)[0]
        shown = re.search(r'data-free="(\d+)" data-total="(\d+)"', block)
        everywhere = await core.list_pod_for_all_namespaces(
            label_selector=f"{labels.ACCELERATOR}=t4"
        )
        held = sum(
            int((p.spec.containers[0].resources.limits or {}).get("nvidia.com/gpu", 0))
            for p in everywhere.items
            if p.spec.node_name and not p.metadata.deletion_timestamp
        )
        return shown and (int(shown[1]), int(shown[2])) == (int(shown[2]) - held, int(shown[2]))

    await wait_until(form_equals_recount, "the form's free T4s to equal a recount of the pods")
    # alice's running server still counts against her limit (its units are in the hub's state).
    status, answer = await call(drill.hub, "POST", "/users/alice/servers/more", {**T4, "count": 2})
    assert status == 403 and "you hold 1 and asked for 2" in answer["message"], (status, answer)


async def test_the_ledger_counts_each_allocation_once(drill, core):
    """alice's interval goes on across the restart (one start); carol's pod held a T4 from its
    binding, hub down or not, until the new hub deleted it (one start, one end); bob's gated
    pod was never bound, so it held nothing."""
    await settled(drill, core)
    run, late = drill.uids["alice/run"], drill.uids["carol/gated-late"]
    status, answer = await call(drill.hub, "DELETE", "/users/alice/servers/run")
    assert status in (202, 204), answer
    both = sorted((uid, phase) for uid in (run, late) for phase in ("end", "start"))

    async def ended():
        rows = await ledger_rows(drill.dsn)
        return rows if sorted(r for r in rows if r[0] in (run, late)) == both else None

    rows = await wait_until(ended, "each interval to start and end once in the ledger", limit=120)
    assert not [r for r in rows if r[0] == drill.uids["bob/gated"]]
