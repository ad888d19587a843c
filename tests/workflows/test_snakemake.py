"""`snakemake --executor aiinfn` with the real components, from a notebook terminal: Snakemake
from the notebook's environment, typed into a JupyterLab terminal of alice's real notebook (her
hub token and the hub's address in its environment), submits every job through the job service
(a real process beside a real hub) to Kueue on the dev cluster, where the pod runner runs each
job's Snakemake command as a real process writing real files in alice's JuiceFS folder, which her
notebook and her jobs mount at /juicefs. One hub, service and notebook for the module.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from aiinfn_dev.devcluster.processes import free_port
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from aiinfn_hub import names
from aiinfn_hub.identity import IdentityStore
from aiinfn_hub.storage_config import StorageSettings
from tests.helpers import wait_until
from tests.hub import REPO, Hub, hub_in_namespace
from tests.jobs_service import PREFIX, Service, hub_lines

pytestmark = pytest.mark.integration

EXAMPLE = REPO / "docs" / "workflows"
HERE = Path(__file__).parent
USERS = {"alice": {"groups": ["cms-ml"]}}
SPAWNER = {
    "default_policy": {"accelerators": ["cpu"], "environments": "*"},
    "group_policies": {
        "cms-ml": {"accelerators": "*", "environments": "*", "max_accelerators": 2},
    },
}
RUN_LIMIT = 300  # seconds a whole workflow may take on a loaded machine


class Terminal:
    """A JupyterLab terminal of alice's notebook, typed into as she would."""

    def __init__(self, connection) -> None:
        self.connection = connection
        self.output = ""

    async def type(self, text: str) -> None:
        await self.connection.write_message(json.dumps(["stdin", text]))

    async def read_until(self, pattern: str, limit: float = RUN_LIMIT) -> re.Match:
        """Read its output until `pattern` matches it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while (found := re.search(pattern, self.output)) is None:
            left = max(deadline - loop.time(), 0.1)
            try:
                message = await asyncio.wait_for(self.connection.read_message(), left)
            except TimeoutError:
                raise AssertionError(f"no {pattern!r} in:\n{self.output[-6000:]}") from None
            assert message is not None, self.output[-6000:]
            kind, *data = json.loads(message)
            if kind == "stdout":
                self.output += data[0]
        return found


@dataclass
class Platform:
    hub: Hub
    token: str
    uid: int
    juicefs: Path  # alice's JuiceFS folder on this machine; /juicefs in her notebook and jobs
    home: Path  # her home folder here
    namespace: str

    def jobs(self) -> list[dict]:
        request = urllib.request.Request(
            f"{self.hub.url}{PREFIX}api/jobs", headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())["jobs"]

    def workflow(self, name: str, *files: Path) -> Path:
        """A fresh folder of alice's on JuiceFS with these files (folders copied whole)."""
        folder = self.juicefs / name
        folder.mkdir()
        for path in files:
            if path.is_dir():
                shutil.copytree(path, folder / path.name)
            else:
                shutil.copy(path, folder / path.name)
        for path in [folder, *folder.rglob("*")]:
            os.chown(path, self.uid, self.uid)
        return folder

    @contextlib.asynccontextmanager
    async def terminal(self):
        headers = {"Authorization": f"token {self.token}"}
        request = urllib.request.Request(
            f"{self.hub.url}/user/alice/api/terminals", data=b"{}", method="POST", headers=headers
        )
        answer = await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=30).read())
        name = json.loads(answer)["name"]
        url = f"{self.hub.url.replace('http', 'ws', 1)}/user/alice/terminals/websocket/{name}"
        connection = await websocket_connect(HTTPRequest(url, headers=headers))
        try:
            yield Terminal(connection)
        finally:
            connection.close()


def snakemake(folder: str, *args: str) -> str:
    """The command line alice types, and her shell's echo of its exit status."""
    command = f"cd {folder} && snakemake --executor aiinfn "
    return command + " ".join(("--seconds-between-status-checks", "1", *args)) + "; echo rc=$?\r"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def platform(devcluster, api_client, kueue, tmp_path_factory):
    kubeconfig, cluster = devcluster
    if cluster is None or "pod-runner" not in {p.name for p in cluster.status().processes}:
        pytest.skip("the dev cluster runs without the pod runner (see its `up` output)")
    tmp = tmp_path_factory.mktemp("workflows")
    port, token = free_port(), secrets.token_hex(32)
    lines = [
        *hub_lines(port, token, rate_limit=200.0, rate_limit_burst=400),
        "c.KubeSpawner.get_pod_url = None",
        "c.AiInfnStorage.juicefs_claim = 'aiinfn-juicefs'",
    ]
    async with hub_in_namespace(
        api_client, kubeconfig, tmp, USERS, SPAWNER, lines, kueue_documents=kueue
    ) as hub:
        service = Service(tmp, hub, port, token)
        try:
            await asyncio.to_thread(service.start)
            status, body = await asyncio.to_thread(
                hub.request, "POST", "/users/alice/tokens", {"note": "workflow tests"}
            )
            assert status == 201, body
            uid = await IdentityStore(api_client, hub.namespace).uid("alice")
            juicefs = hub.storage_folders["aiinfn-juicefs"] / names.slug("alice")
            juicefs.mkdir(mode=0o700)
            os.chown(juicefs, uid, uid)
            status, answer = await asyncio.to_thread(hub.request, "POST", "/users/alice/server", {})
            assert status in (201, 202), answer

            async def ready():
                _, model = await asyncio.to_thread(hub.request, "GET", "/users/alice")
                return (model.get("servers") or {}).get("", {}).get("ready")

            await wait_until(ready, "alice's notebook", limit=180)
            home = hub.storage_folders[StorageSettings().home_claim] / names.slug("alice")
            yield Platform(hub, body["token"], uid, juicefs, home, hub.namespace)
        finally:
            await asyncio.to_thread(hub.request, "DELETE", "/users/alice/server")
            service.stop()


def by_rule(jobs: list[dict]) -> dict[str, list[dict]]:
    """The plugin's jobs (named smk-<rule>-<jobid>) by rule (or group); these rules' names
    have no '_' (which a name shows as '-')."""
    rules: dict[str, list[dict]] = {}
    for job in jobs:
        name = job["name"] or ""
        if name.startswith("smk-"):
            rules.setdefault(name.split("-")[1], []).append(job)
    return rules


async def test_the_documented_example_runs_every_step_as_a_job(platform):
    """docs/workflows/Snakefile as documented (`-j 10`): 13 jobs of five rules, with their
    dependencies, each a job of the service that ran to success writing its files, all on
    alice's jobs page."""
    folder = platform.workflow("example", EXAMPLE / "Snakefile", EXAMPLE / "scripts")
    async with platform.terminal() as terminal:
        await terminal.type(snakemake(f"/juicefs/{folder.name}", "-j", "10"))
        found = await terminal.read_until(r"rc=(\d+)")
    assert found.group(1) == "0", terminal.output[-6000:]
    summary = (folder / "results" / "summary.txt").read_text().splitlines()
    assert len(summary) == 4 and all(line.startswith("lr=") for line in summary), summary
    assert (folder / "data" / "events.csv").read_text().count("\n") == 6001
    rules = by_rule(platform.jobs())
    assert {rule: len(jobs) for rule, jobs in rules.items()} == {
        "simulate": 3,
        "merge": 1,
        "train": 4,
        "evaluate": 4,
        "summary": 1,
    }
    assert {j["state"] for jobs in rules.values() for j in jobs} == {"succeeded"}, rules
    assert {j["accelerator"] for j in rules["train"]} == {"t4"}
    assert {j["offload"] for jobs in rules.values() for j in jobs} == {"never"}
    await asyncio.to_thread(platform.hub.login, "alice")
    status, page = await asyncio.to_thread(platform.hub.page, PREFIX, "alice")
    assert status == 200 and all(
        f'data-job="{j["id"]}"' in page for jobs in rules.values() for j in jobs
    ), page


async def test_steps_the_service_would_refuse_are_refused_before_anything_is_submitted(platform):
    """Offloaded steps where their files cannot go, an offload a job on JuiceFS cannot have, and
    a resource the executor does not know: refused naming the rule, no job made. Without JuiceFS
    credentials for remote sites (this platform), the service itself refuses the remote step."""
    platform.workflow("refused", EXAMPLE / "Snakefile", EXAMPLE / "scripts")
    home = platform.home / "refused"
    shutil.copytree(platform.juicefs / "refused", home)
    for path in [home, *home.rglob("*")]:
        os.chown(path, platform.uid, platform.uid)
    before = len(platform.jobs())
    cases = [
        (
            "~/refused",
            "--config offload=only",
            "rule simulate: an offloaded step may run at a "
            "remote site, which cannot mount home (local-only storage",
        ),
        (
            "/juicefs/refused",
            "--config offload=may",
            "rule simulate: a step that may run here or at a remote site cannot mount juicefs",
        ),
        ("/juicefs/refused", "--set-resources train:colour=2", "rule train: unknown resource"),
        ("/juicefs/refused", "--config offload=only", "no remote site can mount JuiceFS"),
    ]
    async with platform.terminal() as terminal:
        for folder, args, message in cases:
            terminal.output = ""
            await terminal.type(snakemake(folder, "-j", "10", args))
            found = await terminal.read_until(r"rc=(\d+)")
            flat = " ".join(terminal.output.split())
            assert found.group(1) == "1" and message in flat, terminal.output[-4000:]
    assert len(platform.jobs()) == before


async def test_a_failing_rule_is_retried_then_reported_with_its_log(platform):
    folder = platform.workflow("flaky", HERE / "flaky" / "Snakefile")
    async with platform.terminal() as terminal:
        await terminal.type(snakemake(f"/juicefs/{folder.name}", "-j", "4", "--retries", "1"))
        found = await terminal.read_until(r"rc=(\d+)")
    output = terminal.output
    assert found.group(1) == "1", output[-6000:]
    assert sorted(p.name for p in (folder / "tries").iterdir()) == ["1", "2"]
    assert (folder / "fine.txt").read_text() == "fine\n"
    # Each try's job was stopped when its pod failed (the job service would run it again).
    assert "flaky" not in by_rule(platform.jobs())
    failed = set(re.findall(r"message: job (job-[0-9a-f]+) failed \(stopped", output))
    assert len(failed) == 2, output[-6000:]
    assert "flaky gives up on try 1" in output and "flaky gives up on try 2" in output


async def test_ctrl_c_cancels_the_running_jobs_and_leaves_none(platform, core):
    folder = platform.workflow("nap", HERE / "nap" / "Snakefile")

    def napping() -> list[str]:
        naps = by_rule(platform.jobs()).get("nap", [])
        running = [j["id"] for j in naps if j["state"] == "running"]
        return running if len(running) == 3 else []

    async with platform.terminal() as terminal:
        await terminal.type(snakemake(f"/juicefs/{folder.name}", "-j", "3"))
        ids = await wait_until(lambda: asyncio.to_thread(napping), "three naps running", limit=120)
        await terminal.type("\x03")
        found = await terminal.read_until(r"rc=(\d+)")
    assert found.group(1) != "0", terminal.output[-6000:]
    assert by_rule(platform.jobs()).get("nap", []) == []
    selector = f"batch.kubernetes.io/job-name in ({','.join(ids)})"

    async def no_pods() -> bool:
        pods = await core.list_namespaced_pod(platform.namespace, label_selector=selector)
        return not pods.items

    await wait_until(no_pods, "the naps' pods gone")
    assert not list(folder.glob("nap-*.txt"))


async def test_grouped_rules_run_as_one_job(platform):
    folder = platform.workflow("group", HERE / "group" / "Snakefile")
    async with platform.terminal() as terminal:
        await terminal.type(snakemake(f"/juicefs/{folder.name}", "-j", "2"))
        found = await terminal.read_until(r"rc=(\d+)")
    assert found.group(1) == "0", terminal.output[-6000:]
    assert (folder / "second.txt").read_text() == "one\ntwo\n"
    pair = by_rule(platform.jobs())
    assert [j["state"] for j in pair.get("pair", [])] == ["succeeded"], pair
