"""`aiinfn-dev demo` end to end: cluster up, hub up, a demo user logs in, issue 13's walk-through
(docs/demo.md: a notebook takes the A100 of the user's batch clone, the clone is requeued), the
demo's Prometheus shows the A100s the notebooks hold, alice's live GPU-hours on the usage
service, bob's T4 spawn refused with the figures once his quota is used (issue 15's done-when),
the notebook whose GPU went idle warned and culled, its A100 free on the form and the requeued
clone running on it to the end (issue 16's), the ledger holds alice's servers; meanwhile, in
the users' own terminals, alice publishes an environment, bob's running server lists its kernel
and runs code in it, bob clones it with one more package and runs a job in his clone (issue
17's), and alice runs the documented Snakemake workflow, each step a job on her jobs page
(issue 18's); Ctrl-C stops it all (its PostgreSQL and Prometheus too)."""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiinfn_dev.demo import DEMO_NAMESPACE
from aiinfn_dev.demo_envs import EXAMPLE_FOLDER
from aiinfn_dev.devcluster import processes
from aiinfn_dev.devcluster.cluster import DevCluster
from aiinfn_dev.monitoring import UTILISATION
from kubernetes_asyncio import client
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from aiinfn_hub import k8s
from aiinfn_hub.accounting.events import Allocation, AllocationEvent
from tests import jupyter_kernel
from tests.helpers import wait_until
from tests.jobs_service import pods_ready_in_kueue, run_long_then_short

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
A100 = {"accelerator": "a100"}
QUOTA_LINE = r'class="aiinfn-quota"[^>]*>Quota: 0\.\d of 0\.1 hours of [^<]*T4[^<]* left this day'
USED_UP = r'class="aiinfn-quota none"[^>]*>Quota used up: you have used 0\.1 of your 0\.1 hours'
QUOTE = "(?:'|&#39;|&#x27;)"
WARNING = rf"Your server {QUOTE}second{QUOTE} will be stopped in about \d minutes?: its"
A100_CARD = (
    r'data-accelerator="a100".*?data-free="(\d*)" data-total="(\d*)" '
    r'data-free-now="(\d*)" data-batch-jobs="(\d+)"'
)
EXAMPLE = f"/home/public/{EXAMPLE_FOLDER}"
SERVER = "hub.jupyter.org/servername"
DONE = "__walk_through_done_"  # the terminal prints it with the command's exit status
EXTRA_CODE = "import demo_hello, demo_extra; print(demo_extra.GREETING, demo_hello.VERSION)"


def _login(base: str, username: str, password: str) -> tuple[int, urllib.request.OpenerDirector]:
    """Log in through the real form (xsrf included); return /hub/home's status and the browser."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(f"{base}/hub/login").read().decode()
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode(
        {"_xsrf": xsrf, "username": username, "password": password}
    ).encode()
    try:
        opener.open(f"{base}/hub/login", data=form)
    except urllib.error.HTTPError as error:
        return error.code, opener
    response = opener.open(f"{base}/hub/home")
    return (response.status if response.url.endswith("/hub/home") else 302), opener


def _token(base: str, user: str, password: str) -> tuple[str, urllib.request.OpenerDirector]:
    """An API token the user makes after logging in, as the hub's token page does (and the
    logged-in browser)."""
    _, browser = _login(base, user, password)
    jar = next(h for h in browser.handlers if isinstance(h, urllib.request.HTTPCookieProcessor))
    xsrf = next(c.value for c in jar.cookiejar if c.name == "_xsrf")
    request = urllib.request.Request(
        f"{base}/hub/api/users/{user}/tokens",
        data=json.dumps({"note": "walk-through"}).encode(),
        method="POST",
        headers={"X-XSRFToken": xsrf, "Content-Type": "application/json"},
    )
    return json.loads(browser.open(request).read())["token"], browser


def _api(base: str, token: str, method: str, path: str, body=None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"{base}{path}", data=data, method=method, headers={"Authorization": f"token {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, {"raw": error.read().decode(errors="replace")}


def _spawn(base: str, token: str, server: str, options: dict) -> list[str]:
    """Start one of the user's servers through the REST API; its progress messages, once ready."""
    status, body = _api(base, token, "POST", f"/hub/api{server}", options)
    assert status in (201, 202), body
    request = urllib.request.Request(
        f"{base}/hub/api{server}/progress",
        headers={"Authorization": f"token {token}", "Accept": "text/event-stream"},
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        lines = response.read().decode().splitlines()
    events = [json.loads(line[len("data:") :]) for line in lines if line.startswith("data:")]
    assert events and events[-1].get("ready"), events
    return [e["message"] for e in events]


async def _notebook_a100s(prometheus: str, expected: float) -> None:
    """Wait until the demo's Prometheus shows `expected` A100 units held by notebooks (the
    recording rule)."""
    query = urllib.parse.urlencode(
        {"query": 'model_state:aiinfn_accelerator_units:sum{model="a100",state="notebook"}'}
    )

    def read() -> list:
        with urllib.request.urlopen(f"{prometheus}/api/v1/query?{query}", timeout=10) as answer:
            return json.loads(answer.read())["data"]["result"]

    async def shown() -> bool:
        result = await asyncio.to_thread(read)
        return bool(result) and float(result[0]["value"][1]) == expected

    await wait_until(shown, f"the demo's Prometheus to show {expected:g} A100s of notebooks")


def _addresses(text: str) -> dict[str, str]:
    """The demo's Prometheus and ledger, as it prints them."""
    return {
        "prometheus": re.search(r"prometheus: (http://127\.0\.0\.1:\d+)", text).group(1),
        "ledger": re.search(r"accounting ledger \(psql\): (postgresql://\S+)", text).group(1),
    }


async def _bob_uses_up_his_quota(base: str, password: str, ledger: str, kubeconfig: Path) -> None:
    """docs/demo.md, "A quota used up": bob's form shows his T4 hours left; with 6.5 minutes of
    T4 earlier today in the ledger (a server of his that ended), it says they are used up and a
    T4 spawn is refused, 403, with the figures, and nothing is created."""
    bob, browser = await asyncio.to_thread(_token, base, "bob", password)
    form = await asyncio.to_thread(lambda: browser.open(f"{base}/hub/spawn").read().decode())
    assert re.search(QUOTA_LINE, form), form
    await _seed_bobs_t4(ledger)
    form = await asyncio.to_thread(lambda: browser.open(f"{base}/hub/spawn").read().decode())
    assert re.search(USED_UP, form), form
    status, body = await asyncio.to_thread(
        _api, base, bob, "POST", "/hub/api/users/bob/server", {"accelerator": "t4"}
    )
    assert status == 403, body
    message = json.loads(body["raw"])["message"]
    assert message.startswith("you have used 0.1 of your 0.1 hours of "), message
    assert " this day (resets " in message, message
    api = await k8s.api_client(str(kubeconfig))
    async with api:
        pods = await client.CoreV1Api(api).list_namespaced_pod(
            DEMO_NAMESPACE, label_selector="hub.jupyter.org/username=bob"
        )
    created = [p.metadata.name for p in pods.items if p.metadata.labels.get(SERVER) != "envs"]
    assert not created, created  # his CPU server `envs` (the environments' walk-through) aside


async def _seed_bobs_t4(ledger: str) -> None:
    """6.5 minutes of one T4 for bob, ended 10 s ago, all of them today (UTC)."""
    import psycopg

    from aiinfn_hub.accounting import ledger as accounting

    async def today_long_enough() -> bool:
        now = datetime.now(UTC)
        return now - now.replace(hour=0, minute=0, second=0, microsecond=0) > timedelta(minutes=7)

    await wait_until(today_long_enough, "the UTC day to be 7 minutes old", limit=480)
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=10)
    held = Allocation("demo-bob-t4-earlier", "bob", "", "t4", "notebook", "", 1, 1000)
    start = AllocationEvent(held, "start", end - timedelta(minutes=6, seconds=30))
    async with await psycopg.AsyncConnection.connect(ledger) as connection:
        await accounting.insert(connection, [start, AllocationEvent(held, "end", end)])
        await connection.commit()


async def _live_gpu_seconds(base: str, token: str) -> float | None:
    """alice's A100 notebook seconds (the last 30 days) as the usage service counts them now:
    her running servers up to this moment."""
    status, body = await asyncio.to_thread(_api, base, token, "GET", "/services/usage/api/usage")
    assert status == 200, body
    seconds = sum(
        row["accelerator_seconds"]
        for row in body["totals"]
        if (row["model"], row["kind"]) == ("a100", "notebook")
    )
    return seconds or None


async def _alice_sees_her_gpu_hours_grow(base: str, token: str) -> None:
    """The usage service counts alice's running A100 servers up to now: non-zero, growing."""
    first = await wait_until(lambda: _live_gpu_seconds(base, token), "alice's GPU-hours")

    async def grown() -> bool:
        return (await _live_gpu_seconds(base, token) or 0) > first

    await wait_until(grown, "alice's GPU-hours to grow while her servers run")


async def _make_idle(kubeconfig: Path, user: str, server: str) -> None:
    """Set the server's simulated GPU utilisation to 0% (the demo's stand-in exporter reads the
    pod's annotation; docs/demo.md, "An idle GPU server culled")."""
    selector = f"hub.jupyter.org/username={user},hub.jupyter.org/servername={server}"
    api = await k8s.api_client(str(kubeconfig))
    async with api:
        core = client.CoreV1Api(api)
        (pod,) = (await core.list_namespaced_pod(DEMO_NAMESPACE, label_selector=selector)).items
        patch = {"metadata": {"annotations": {UTILISATION: "0"}}}
        await core.patch_namespaced_pod(pod.metadata.name, DEMO_NAMESPACE, patch)


async def _warned(base: str, token: str, browser, server: str) -> None:
    """The culler's warning on alice's home page while `server` still runs (read after it)."""

    async def shown() -> bool:
        page = await asyncio.to_thread(lambda: browser.open(f"{base}/hub/home").read().decode())
        if not re.search(WARNING, page):
            return False
        _, model = await asyncio.to_thread(_api, base, token, "GET", "/hub/api/users/alice")
        return server in model["servers"]

    await wait_until(shown, f"the warning for {server} on the home page", limit=150)


async def _culled(base: str, token: str, server: str) -> None:
    async def gone() -> bool:
        _, model = await asyncio.to_thread(_api, base, token, "GET", "/hub/api/users/alice")
        return server not in model["servers"]

    await wait_until(gone, f"the culler to stop {server}", limit=120)


def _stopped(addresses: dict[str, str]) -> None:
    """The demo's Prometheus and PostgreSQL no longer answer."""
    import psycopg

    with pytest.raises(OSError):
        urllib.request.urlopen(addresses["prometheus"], timeout=2)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(addresses["ledger"], connect_timeout=2).close()


async def _alice_in_the_ledger(ledger: str) -> list[tuple] | None:
    """alice's A100 notebook allocations in the demo's ledger, once "second" has ended."""
    import psycopg  # here: JupyterHub 5.5's environment collects this module without it

    async with await psycopg.AsyncConnection.connect(ledger) as connection:
        cursor = await connection.execute(
            "SELECT phase, units FROM accounting_events WHERE user_name = 'alice' "
            "AND model = 'a100' AND kind = 'notebook' ORDER BY phase"
        )
        rows = await cursor.fetchall()
    return rows if ("end", 1) in rows else None


async def _job_in(base: str, token: str, job: str, states: tuple[str, ...]) -> dict | None:
    """The job's record from the job service, if it is in one of `states`."""
    _, body = await asyncio.to_thread(_api, base, token, "GET", f"/services/jobs/api/jobs/{job}")
    return body if body.get("state") in states else None


async def _a100_card(base: str, browser, expected: tuple[str, ...]) -> bool:
    """Whether alice's spawn form's A100 numbers (free if jobs stop, total, free now, jobs
    stopped) start with `expected`."""
    page = await asyncio.to_thread(
        lambda: browser.open(f"{base}/hub/spawn/alice/second").read().decode()
    )
    card = re.search(A100_CARD, page, re.DOTALL)
    return bool(card) and card.groups()[: len(expected)] == expected


class Terminal:
    """A terminal of a user's server through the hub's proxy, as JupyterLab opens one: Jupyter's
    terminals API, then its websocket (terminado: ["stdin", ...] in, ["stdout", ...] out)."""

    def __init__(self, socket) -> None:
        self.socket = socket

    @classmethod
    async def open(cls, base: str, token: str, server: str) -> Terminal:
        """A new terminal of `server` (/user/NAME or /user/NAME/SERVER)."""
        status, body = await asyncio.to_thread(
            _api, base, token, "POST", f"{server}/api/terminals", {}
        )
        assert status == 200, body
        url = f"{base.replace('http', 'ws', 1)}{server}/terminals/websocket/{body['name']}"
        headers = {"Authorization": f"token {token}"}
        socket = await websocket_connect(HTTPRequest(url, headers=headers))
        await socket.write_message(json.dumps(["set_size", 50, 400]))  # no wrapped lines
        return cls(socket)

    async def run(self, command: str, limit: float = 180) -> str:
        """What the shell printed for `command` (typed, then Enter), once it ended with 0."""
        await self.socket.write_message(json.dumps(["stdin", f"{command}; echo {DONE}$?__\r"]))
        printed = ""
        while not (end := re.search(rf"{DONE}(\d+)__", printed)):
            message = await asyncio.wait_for(self.socket.read_message(), limit)
            assert message is not None, f"the terminal closed; it printed: {printed}"
            kind, *content = json.loads(message)
            printed += content[0] if kind == "stdout" else ""
        assert end.group(1) == "0", printed
        return printed

    def close(self) -> None:
        self.socket.close()


async def _kernel_prints(base: str, token: str, server: str, kernel: str, code: str) -> str:
    """What `code` prints in a new kernel `kernel` of the user's server (the kernels API and
    its channels websocket through the proxy, as a notebook runs a cell)."""
    status, started = await asyncio.to_thread(
        _api, base, token, "POST", f"{server}/api/kernels", {"name": kernel}
    )
    assert status == 201, started
    url = f"{base.replace('http', 'ws', 1)}{server}/api/kernels/{started['id']}/channels"
    try:
        return await jupyter_kernel.execute(url, token, code)
    finally:
        await asyncio.to_thread(
            _api, base, token, "DELETE", f"{server}/api/kernels/{started['id']}"
        )


async def _kernels(base: str, token: str, server: str) -> dict:
    status, body = await asyncio.to_thread(_api, base, token, "GET", f"{server}/api/kernelspecs")
    assert status == 200, body
    return body["kernelspecs"]


async def _job_named(base: str, token: str, name: str) -> dict | None:
    """The caller's job of that name, once it has ended."""
    _, body = await asyncio.to_thread(_api, base, token, "GET", "/services/jobs/api/jobs")
    found = [job for job in body.get("jobs", []) if job.get("name") == name]
    return found[0] if found and found[0]["state"] in ("succeeded", "failed") else None


async def _environments(base: str, password: str, alice: str) -> None:
    """docs/demo.md, "An environment published, cloned and used by a job": bob's server runs;
    alice (a curator) publishes the demo's example spec from a terminal of her `gpu` server;
    bob's running server lists its kernel without a restart and runs code in it; in his
    terminal bob clones it with one more package and submits a job in his clone, which
    succeeds with the extra package imported in its log."""
    bob, _ = await asyncio.to_thread(_token, base, "bob", password)
    await asyncio.to_thread(_spawn, base, bob, "/users/bob/servers/envs", {"accelerator": "cpu"})
    assert not {k for k in await _kernels(base, bob, "/user/bob/envs") if k.startswith("envs-")}
    terminal = await Terminal.open(base, alice, "/user/alice/gpu")
    try:
        await terminal.run(f"aiinfn envs publish {EXAMPLE}/hello.yaml")
    finally:
        terminal.close()

    async def listed() -> dict | None:
        return (await _kernels(base, bob, "/user/bob/envs")).get("envs-hello")

    spec = await wait_until(listed, "the published kernel in bob's running server")
    assert spec["spec"]["display_name"] == "Hello (demo)", spec
    code = "import demo_hello, sys; print(demo_hello.VERSION, sys.prefix)"
    printed = await _kernel_prints(base, bob, "/user/bob/envs", "envs-hello", code)
    assert printed == "1.0 /envs/hello\n", printed
    terminal = await Terminal.open(base, bob, "/user/bob/envs")
    try:
        await terminal.run(
            f"aiinfn envs clone hello mine --add {EXAMPLE}/demo_extra-1.0-py3-none-any.whl"
        )
        assert "home-mine" in await _kernels(base, bob, "/user/bob/envs")
        await terminal.run(
            "aiinfn jobs submit --name in-mine --environment ~/envs/mine -- "
            f'python -c "{EXTRA_CODE}"'
        )
        job = await wait_until(
            lambda: _job_named(base, bob, "in-mine"), "bob's job to end", limit=180
        )
        assert job["state"] == "succeeded", job
        log = await terminal.run(f"aiinfn jobs logs {job['id']}")
    finally:
        terminal.close()
    assert "hello from the extra package 1.0" in log, log


async def _workflow(base: str, alice: str, browser) -> None:
    """docs/demo.md, "A workflow's steps as jobs" (issue 18's done-when): in a terminal of
    alice's `gpu` server, the documented example (docs/workflows) copied to her JuiceFS folder
    and run with `snakemake --executor aiinfn -j 10`; its 13 jobs succeeded, all on her jobs
    page, and the summary written."""
    terminal = await Terminal.open(base, alice, "/user/alice/gpu")
    try:
        await terminal.run(f"cp -r {REPO}/docs/workflows /juicefs/example && cd /juicefs/example")
        await terminal.run("snakemake --executor aiinfn -j 10", limit=300)
        summary = await terminal.run("cat results/summary.txt")
    finally:
        terminal.close()
    assert summary.count("lr=") == 4, summary
    _, body = await asyncio.to_thread(_api, base, alice, "GET", "/services/jobs/api/jobs")
    steps = [job for job in body["jobs"] if (job["name"] or "").startswith("smk-")]
    assert len(steps) == 13 and {job["state"] for job in steps} == {"succeeded"}, steps
    page = await asyncio.to_thread(lambda: browser.open(f"{base}/services/jobs/").read().decode())
    assert all(f'data-job="{job["id"]}"' in page for job in steps), page


async def _walk_through(base: str, password: str, kubeconfig: Path, monitoring: dict) -> None:
    """docs/demo.md, "A notebook takes an accelerator from a batch job": carol's server holds two
    of the four A100s and alice's "gpu" server a third; alice's clone takes the only free one;
    alice's second server takes it back. The spawn succeeds naming the clone, the clone is
    requeued. Meanwhile the demo's Prometheus shows the notebooks' three A100s (alice's among
    them), the usage service alice's GPU-hours growing, and bob uses up his quota ("A quota
    used up"). Then "An idle GPU server culled": "second", its GPU at 0%, is warned and culled,
    its A100 is free on the form, and the waiting clone runs again on it and completes; the
    ledger has alice's two servers, "second" ended. Beside all this, once alice's "gpu" server
    runs: "An environment published, cloned and used by a job" and "A workflow's steps as
    jobs"."""
    alice, browser = await asyncio.to_thread(_token, base, "alice", password)
    carol, _ = await asyncio.to_thread(_token, base, "carol", password)
    await asyncio.to_thread(_spawn, base, carol, "/users/carol/server", A100 | {"count": 2})
    await asyncio.to_thread(_spawn, base, alice, "/users/alice/servers/gpu", A100)
    # Beside the rest, in alice's `gpu` and a CPU server of bob's (docs/demo.md).
    beside = [
        asyncio.create_task(_environments(base, password, alice)),
        asyncio.create_task(_workflow(base, alice, browser)),
    ]
    try:
        await _preemption_and_culling(base, password, (alice, browser), kubeconfig, monitoring)
        await asyncio.gather(*beside)
    finally:
        for task in beside:
            task.cancel()


async def _preemption_and_culling(
    base: str, password: str, logged_in: tuple, kubeconfig: Path, monitoring: dict
) -> None:
    """The clone requeued by alice's `second` server, then run again once `second` is culled;
    bob's quota used up meanwhile (alice's token and browser: `logged_in`)."""
    alice, browser = logged_in
    clone = {"name": "training", "server": "gpu", **A100, "command": run_long_then_short(".walk")}
    status, job = await asyncio.to_thread(
        _api, base, alice, "POST", "/services/jobs/api/clones", clone
    )
    assert status == 201, job

    def state(*states: str):
        return _job_in(base, alice, job["id"], states)

    await wait_until(lambda: state("running"), "the clone to run")
    api = await k8s.api_client(str(kubeconfig))
    try:
        await wait_until(lambda: pods_ready_in_kueue(api, DEMO_NAMESPACE, job["id"]), "PodsReady")
    finally:
        await api.close()

    await wait_until(
        lambda: _a100_card(base, browser, ("1", "4", "0", "1")),
        "the form to offer the clone's A100 (1 job would be stopped)",
    )
    await _notebook_a100s(monitoring["prometheus"], 3.0)  # carol's two, alice's one
    messages = await asyncio.to_thread(_spawn, base, alice, "/users/alice/servers/second", A100)
    assert any(
        m.startswith("Stopping 1 batch job on ") and m.endswith(": your job 'training'")
        for m in messages
    ), messages
    await _make_idle(kubeconfig, "alice", "second")  # its GPU at 0% from now on
    # Watched from now: the warning comes 30 s into the idle time, while the rest goes on.
    warned = asyncio.create_task(_warned(base, alice, browser, "second"))
    requeued = await wait_until(lambda: state("requeued"), "the clone to be requeued", limit=180)
    assert requeued["message"].startswith("requeued: its pods were stopped"), requeued
    await _alice_sees_her_gpu_hours_grow(base, alice)
    await _bob_uses_up_his_quota(base, password, monitoring["ledger"], kubeconfig)
    await warned
    await _culled(base, alice, "second")
    await wait_until(
        lambda: _a100_card(base, browser, ("1", "4")), "the culled server's A100 free on the form"
    )
    done = await wait_until(lambda: state("succeeded", "failed"), "the clone to end", limit=180)
    assert (done["state"], done["failed"], done["site"]) == ("succeeded", 0, "local"), done
    rows = await wait_until(
        lambda: _alice_in_the_ledger(monitoring["ledger"]), "alice's servers in the ledger"
    )
    assert rows == [("end", 1), ("start", 1), ("start", 1)], rows


def _logs_in(base: str, password: str) -> None:
    """alice logs in with the printed password and sees the farm on her form; a wrong password
    and an unknown user do not."""
    status, alice = _login(base, "alice", password)
    assert status == 200
    spawn_page = alice.open(f"{base}/hub/spawn").read().decode()
    assert "NVIDIA A100 80GB" in spawn_page and "A100 MIG slice 3g.40gb" in spawn_page
    assert re.search(r"\d+ of 4 free", spawn_page)
    assert _login(base, "alice", "not-the-password")[0] == 403
    assert _login(base, "mallory", password)[0] == 403


def test_demo_logs_in_walks_through_a_preemption_and_stops_on_ctrl_c(devcluster, tmp_path):
    _, session_cluster = devcluster
    if session_cluster is None:
        pytest.skip("the demo test needs the built dev cluster")
    name = f"demo-e2e-{os.getpid()}"
    hub_port, api_port = processes.free_port(), processes.free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("AIINFN_DEMO_MODE", None)
    output = tmp_path / "demo.log"
    command = ["demo", "--port", str(hub_port), "--cluster-name", name]
    with open(output, "wb") as log:
        demo = subprocess.Popen(
            [sys.executable, "-m", "aiinfn_dev.demo", *command, "--cluster-port", str(api_port)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    cluster = DevCluster(name=name, port=api_port, cache=session_cluster.cache)
    try:
        deadline = time.monotonic() + 180
        while (
            "Ctrl-C stops" not in output.read_text()
            and demo.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.5)
        text = output.read_text()
        assert "aiinfn-dev demo is running at" in text, text[-3000:]
        password = re.search(r"password: (\S+)", text).group(1)
        monitoring = _addresses(text)
        assert password not in text.replace(f"password: {password}", "")  # printed once
        cluster_pids = cluster.status().processes
        assert {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"} <= {
            p.name for p in cluster_pids
        }

        base = f"http://127.0.0.1:{hub_port}"
        _logs_in(base, password)
        asyncio.run(_walk_through(base, password, cluster.layout.admin_kubeconfig, monitoring))

        os.killpg(demo.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        assert demo.wait(timeout=60) == 0
        _stopped(monitoring)
        assert not any(p.alive() for p in cluster_pids)
        assert cluster.status().state == "stopped"
        with pytest.raises(OSError):
            urllib.request.urlopen(base, timeout=2)
    finally:
        if demo.poll() is None:  # Ctrl-C first, so that the demo stops what it started
            os.killpg(demo.pid, signal.SIGINT)
            try:
                demo.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(demo.pid, signal.SIGKILL)
                demo.wait()
        cluster.down()
