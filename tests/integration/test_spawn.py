"""GPU-aware spawns through a real JupyterHub on the real control plane: live availability on the
form, each accelerator on the right node, the last-A100 race, forged REST options, fail-fast."""

from __future__ import annotations

import asyncio
import html
import json
import os
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest
import pytest_asyncio

from aiinfn_hub import catalog, volumes
from tests.helpers import restricted_pod, wait_until
from tests.hub import KWOK_PLAYED, hub_in_namespace

pytestmark = pytest.mark.integration

CRASH_SCRIPT = """
n=$(( $(cat /dev/shm/runs 2>/dev/null || echo 0) + 1 )); echo $n > /dev/shm/runs
i=0; while [ $i -lt 40 ]; do echo "noise $i"; i=$((i+1)); done
echo "run $n"
echo "token in env: $JUPYTERHUB_API_TOKEN" >&2
echo "ImportError: no module named boom" >&2
exit 3
"""
HOLD = "tests.aiinfn.infn.it/hold"
SETUP_CRASH_SCRIPT = "echo 'refusing /home/jovyan: owned by uid 0, not by you' >&2; exit 1"
USERS = {
    "alice": {"groups": ["cms-ml"]},
    "carol": {"groups": ["cms-ml"]},
    "bob": {"groups": ["lhcb-flashsim"]},
    "dora": {"groups": ["cms-ml"]},
}
SPAWNER = {
    "default_policy": {"accelerators": ["cpu"], "environments": "*"},
    "group_policies": {
        "cms-ml": {
            "accelerators": "*",
            "environments": "*",
            "max_accelerators": 4,
            "custom_images": True,
        },
        "lhcb-flashsim": {
            "accelerators": ["cpu", "t4", "a100", "a100-mig-1g-10gb"],
            "environments": "*",
            "max_accelerators": 1,
        },
    },
    "fail_fast_seconds": 2.0,
    "crash_restarts": 1,
}
# Test-only pod changes by server name, in the generated hub config: crash-* servers run a
# notebook that fails at once (printing its run number, 40 lines of noise and the hub's API
# token), setup-crash-* ones a storage init container that refuses the home folder; held-* pods
# carry a finalizer, so their deletion waits until the test removes it. Only the servers whose
# test needs a real container (REAL_SERVERS) are the pod runner's: kwok plays the rest.
REAL_SERVERS = ("crash-", "setup-crash-", "wrong-home")
POD_HOOK = f"""
def _test_pod_hook(spawner, pod):
    if not spawner.name.startswith({REAL_SERVERS!r}):
        pod.metadata.annotations = {{**(pod.metadata.annotations or {{}}), **{KWOK_PLAYED!r}}}
    def command(container, argv):
        if isinstance(container, dict):
            container.update(command=argv, args=None)
        else:
            container.command, container.args = argv, None
    if spawner.name.startswith("crash-"):
        command(pod.spec.containers[0], ["sh", "-c", {CRASH_SCRIPT!r}])
    if spawner.name.startswith("setup-crash-"):
        command(pod.spec.init_containers[0], ["sh", "-c", {SETUP_CRASH_SCRIPT!r}])
    if spawner.name.startswith("held-"):
        pod.metadata.finalizers = [{HOLD!r}]
    return pod
c.KubeSpawner.modify_pod_hook = _test_pod_hook
"""


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def hub(devcluster, api_client, tmp_path_factory):
    kubeconfig, _ = devcluster
    async with hub_in_namespace(
        api_client,
        kubeconfig,
        tmp_path_factory.mktemp("hub"),
        USERS,
        SPAWNER,
        extra_config=[POD_HOOK],
    ) as hub:
        yield hub


async def call(hub, method, path, body=None, token=None):
    return await asyncio.to_thread(hub.request, method, path, body, token)


async def stop_all(hub, user):
    status, model = await call(hub, "GET", f"/users/{user}")
    for name in list(model.get("servers", {})):
        if name:
            await call(hub, "DELETE", f"/users/{user}/servers/{name}", {"remove": True})
        else:
            await call(hub, "DELETE", f"/users/{user}/server")


async def spawn_failure(hub, user, server, body):
    """Start a named server that must fail: the message of the failure, whether the REST call
    answered it at once (an error status) or answered 202 and the spawn's progress ends failed.
    201 (ready) is never right for such a spawn."""
    status, answer = await call(hub, "POST", f"/users/{user}/servers/{server}", body)
    assert status != 201, answer
    if status != 202:
        assert status >= 400, answer
        return answer["message"]
    events = await asyncio.to_thread(hub.events, f"/users/{user}/servers/{server}/progress")
    assert events[-1].get("failed"), events
    return events[-1]["message"]


def read_progress(hub, user, server, connected: threading.Event) -> list[dict]:
    """A spawn's progress events as the spawn page reads them, from while it is pending to its
    end; `connected` is set once the first event (JupyterHub's "Server requested") came."""
    request = urllib.request.Request(
        f"{hub.url}/hub/api/users/{user}/servers/{server}/progress",
        headers={"Authorization": f"token {hub.token}", "Accept": "text/event-stream"},
    )
    events = []
    with urllib.request.urlopen(request, timeout=180) as response:
        for line in response:
            if line.startswith(b"data:"):
                events.append(json.loads(line[len(b"data:") :]))
                connected.set()
    return events


async def server_pods(core, namespace, user, server):
    pods = await core.list_namespaced_pod(namespace)
    wanted = {"hub.jupyter.org/username": user, "hub.jupyter.org/servername": server}
    return [p for p in pods.items if wanted.items() <= (p.metadata.annotations or {}).items()]


async def accelerator_pods(core, namespace, key):
    pods = await core.list_namespaced_pod(
        namespace, label_selector=f"aiinfn.infn.it/accelerator={key}"
    )
    return [p for p in pods.items if not p.metadata.deletion_timestamp]


async def free_on_form(hub, user, key):
    """(free, total) the spawn form shows for one accelerator right now."""
    status, html = await asyncio.to_thread(hub.page, "/hub/spawn", user)
    assert status == 200, html[:500]
    block = html.split(f'data-accelerator="{key}"', 1)[1].split('class="aiinfn-choice', 1)[0]
    match = re.search(r'data-free="(\d*)" data-total="(\d*)"', block)
    return (int(match[1]), int(match[2])) if match and match[1] else (None, None)


def filler(name, node, resources, priority=True):
    pod = restricted_pod(name, limits=resources)
    pod["spec"]["nodeName"] = node
    if priority:
        pod["spec"]["priorityClassName"] = "aiinfn-notebook"
    return pod


async def test_form_numbers_follow_pods_in_any_namespace(hub, core, batch, namespace):
    async def shows(expected):
        return await free_on_form(hub, "alice", "t4") == expected or None

    # Earlier tests' pods may still be terminating: start from a farm whose T4s are all free.
    before = (8, 8)
    await wait_until(lambda: shows(before), "every T4 to be free on the form")
    await core.create_namespaced_pod(
        namespace, filler("t4-user", "server1-t4", {"nvidia.com/gpu": "2"})
    )
    await wait_until(lambda: shows((6, 8)), "the form to show two T4s fewer")
    await core.delete_namespaced_pod("t4-user", namespace)
    await wait_until(lambda: shows(before), "the form to show the T4s free again")

    # Batch Jobs' pods lend GPUs: they still count as free for notebooks (batch yields); the form
    # tells idle units from lent ones and counts Jobs, not pods: "lender" 1 pod, "lenders" 2.
    for name, pods in (("lender", 1), ("lenders", 2)):
        await batch.create_namespaced_job(namespace, lending_job(name, pods))

    async def lent():
        status, html = await asyncio.to_thread(hub.page, "/hub/spawn", "alice")
        block = html.split('data-accelerator="t4"', 1)[1].split('class="aiinfn-choice', 1)[0]
        facts = " ".join(re.sub(r"<[^>]+>", " ", block.split("aiinfn-facts", 1)[1]).split())
        return (
            'data-free="8" data-total="8" data-free-now="5" data-batch-jobs="2"' in block
            and "5 of 8 free now · 8 if batch jobs stop (2 jobs would be stopped)" in facts
        )

    await wait_until(lent, "the form to show three T4s lent to two batch jobs")
    assert await free_on_form(hub, "alice", "t4") == before


def lending_job(name, pods):
    """A Job of `pods` pods on server1-t4, one T4 each, running for 300 s (kwok)."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "parallelism": pods,
            "completions": pods,
            "template": {
                "metadata": {"annotations": {"pod-complete.stage.kwok.x-k8s.io/delay": "300s"}},
                "spec": {
                    **filler("x", "server1-t4", {"nvidia.com/gpu": "1"}, priority=False)["spec"],
                    "restartPolicy": "Never",
                },
            },
        },
    }


@pytest.mark.parametrize(
    "server, options, nodes",
    [
        ("t4", {"accelerator": "t4"}, {"server1-t4"}),
        ("mig", {"accelerator": "a100-mig-3g-40gb"}, {"server2-a100-mig"}),
        ("fpga", {"accelerator": "u250", "size": "medium"}, {"server2-u250", "server3-u250"}),
        ("a100", {"accelerator": "a100", "environment": "qml"}, {"server2-a100", "server3-a100"}),
        ("cpu", {}, {"service-vm-0", "service-vm-1"}),
    ],
)
async def test_each_accelerator_lands_on_its_node(hub, core, server, options, nodes):
    status, body = await call(hub, "POST", f"/users/alice/servers/{server}", options)
    try:
        assert status in (201, 202), body
        key = options.get("accelerator", "cpu")

        async def bound():
            pods = await accelerator_pods(core, hub.namespace, key)
            return pods if pods and pods[0].spec.node_name else None

        pod = (await wait_until(bound, f"the {key} pod to be bound"))[0]
        assert pod.spec.node_name in nodes
        container = pod.spec.containers[0]
        if key != "cpu":
            resource = {
                "t4": "nvidia.com/gpu",
                "a100": "nvidia.com/gpu",
                "mig": "nvidia.com/mig-3g.40gb",
                "fpga": "xilinx.com/fpga-xilinx_u250_gen3x16_xdma_shell_4_1",
            }[server]
            assert container.resources.limits[resource] == "1"
        assert pod.spec.priority_class_name == "aiinfn-notebook"
        assert pod.spec.automount_service_account_token is False
    finally:
        await stop_all(hub, "alice")


async def test_last_a100_race_one_wins_the_other_is_refused_at_once(hub, core, namespace):
    await wait_until(lambda: free_on_form(hub, "alice", "a100"), "A100 numbers")

    async def all_free():
        return await free_on_form(hub, "alice", "a100") == (4, 4) or None

    await wait_until(all_free, "every A100 to be free")
    for i in range(3):
        await core.create_namespaced_pod(
            namespace, filler(f"a100-{i}", "server3-a100", {"nvidia.com/gpu": "1"})
        )

    async def one_left():
        return await free_on_form(hub, "alice", "a100") == (1, 4) or None

    await wait_until(one_left, "exactly one A100 to be free")
    try:
        results = await asyncio.gather(
            call(hub, "POST", "/users/carol/server", {"accelerator": "a100"}),
            call(hub, "POST", "/users/bob/server", {"accelerator": "a100"}),
        )
        statuses = sorted(status for status, _ in results)
        assert statuses[0] in (201, 202) and statuses[1] == 503, results
        refusal = next(body for status, body in results if status == 503)
        assert refusal["message"].startswith("no NVIDIA A100 80GB free now (0/4)"), refusal
        assert len(await accelerator_pods(core, hub.namespace, "a100")) == 1
    finally:
        await stop_all(hub, "carol")
        await stop_all(hub, "bob")


@pytest.mark.parametrize(
    "user, body, status, message",
    [
        ("alice", {"accelerator": "h100"}, 400, "unknown accelerator 'h100'"),
        (
            "alice",
            {"accelerator": "a100", "namespace": "kube-system"},
            400,
            "unknown option(s): namespace",
        ),
        (
            "alice",
            {"accelerator": "a100", "count": 9},
            400,
            "count for NVIDIA A100 80GB must be one of 1, 2",
        ),
        (
            "alice",
            {"accelerator": "t4", "image": "docker.io/library/ubuntu:22.04"},
            400,
            "custom image is not allowed",
        ),
        ("alice", {"accelerator": "t4", "privileged": True}, 400, "unknown option(s): privileged"),
        ("alice", {"accelerator": "t4", "environment": "$(rm -rf /)"}, 400, "unknown environment"),
        ("bob", {"accelerator": "v70"}, 403, "not available to your groups"),
        (
            "bob",
            {"accelerator": "t4", "image": "harbor.cloud.infn.it/ai-infn-users/bob/x:1"},
            403,
            "custom images are not available to your groups",
        ),
        (
            "bob",
            {"accelerator": "t4", "count": 2},
            403,
            "over your limit of 1 accelerator: you hold 0 and asked for 2",
        ),
    ],
)
async def test_forged_rest_options_are_refused_and_create_nothing(
    hub, core, user, body, status, message
):
    got, answer = await call(hub, "POST", f"/users/{user}/server", body)
    assert got == status, answer
    assert message in answer["message"]
    pods = await core.list_namespaced_pod(hub.namespace)
    assert not [p for p in pods.items if not p.metadata.deletion_timestamp]
    _, model = await call(hub, "GET", f"/users/{user}")
    assert not model["servers"]


async def test_unschedulable_spawn_fails_fast_with_the_scheduler_reason(hub, core, namespace):
    # The A30 is free, but its node has no CPU left: the inventory says yes, the scheduler says no.
    await core.create_namespaced_pod(namespace, filler("cpu-hog", "server2-a30", {"cpu": "16"}))
    try:
        status, body = await call(hub, "POST", "/users/alice/server", {"accelerator": "a30"})
        assert status == 503, body
        assert "no node can host this server now" in body["message"]
        assert "Insufficient cpu" in body["message"]

        async def gone():
            return not await accelerator_pods(core, hub.namespace, "a30")

        await wait_until(gone, "the failed spawn's pod to be deleted")
    finally:
        await stop_all(hub, "alice")


async def test_unschedulable_spawn_is_never_answered_ready(hub, core, namespace):
    # The spawn is given up after fail_fast_seconds, well before the hub's slow_spawn_timeout
    # (10 s) answers the REST call; the pod's deletion is held until that answer came. JupyterHub
    # stops counting a spawn as pending as soon as start() fails, so a spawner that failed with
    # its pod still there was answered 201 (ready).
    await core.create_namespaced_pod(namespace, filler("cpu-hog", "server2-a30", {"cpu": "16"}))
    server = f"held-{uuid.uuid4().hex[:6]}"
    spawn = asyncio.ensure_future(
        call(hub, "POST", f"/users/alice/servers/{server}", {"accelerator": "a30"})
    )

    async def deleting():
        pods = await server_pods(core, hub.namespace, "alice", server)
        return bool(pods) and pods[0].metadata.deletion_timestamp is not None

    connected = threading.Event()
    progress = None
    try:
        await wait_until(deleting, "the unschedulable pod's deletion")
        status, answer = await spawn
        assert status == 202, answer
        # Still pending (the pod's deletion is held): the progress stream replays the spawn.
        progress = asyncio.ensure_future(
            asyncio.to_thread(read_progress, hub, "alice", server, connected)
        )

        async def streaming():
            return connected.is_set() or progress.done()

        await wait_until(streaming, "the progress stream")
    finally:
        for pod in await server_pods(core, hub.namespace, "alice", server):
            await core.patch_namespaced_pod(
                pod.metadata.name, hub.namespace, {"metadata": {"finalizers": None}}
            )
    try:
        events = await progress
        assert events[-1].get("failed"), events
        assert "no node can host this server now" in events[-1]["message"], events
        messages = [e["message"] for e in events]
        ours = [
            next(i for i, m in enumerate(messages) if m.startswith(start))
            for start in (
                "Server requested",
                "Options checked: 1 × ",
                "Reserved 1 unit of ",
                "Storage identity assigned: uid ",
                "Waiting for the scheduler: ",
            )
        ]
        assert ours == sorted(ours), messages
        waiting = [m for m in messages if m.startswith("Waiting for the scheduler: ")]
        assert "Insufficient cpu" in waiting[0], messages
        bar = [e["progress"] for e in events if "progress" in e]
        assert bar == sorted(bar), events
    finally:
        await call(hub, "DELETE", f"/users/alice/servers/{server}", {"remove": True})


async def test_crash_looping_notebook_fails_after_the_restarts_with_its_last_log_lines(hub, core):
    server = f"crash-{uuid.uuid4().hex[:6]}"
    try:
        message = await spawn_failure(hub, "alice", server, {})
        head, _, log = message.partition("; its last log lines:\n")
        # crash_restarts is 1: the second run's failure ends the spawn, and its log is shown.
        assert head.endswith(
            "your server could not start: container 'notebook' failed again "
            "after 1 restart (exit code 3)"
        ), message
        lines = log.split("\n")
        assert len(lines) == 20, message  # crash_log_lines' default
        assert "run 2" in lines and "noise 39" in lines and "noise 0" not in lines
        assert lines[-2:] == ["token in env: [redacted]", "ImportError: no module named boom"]

        async def gone():
            return not await server_pods(core, hub.namespace, "alice", server)

        await wait_until(gone, "the failed server's pod to be deleted")
    finally:
        await call(hub, "DELETE", f"/users/alice/servers/{server}", {"remove": True})


async def test_failing_setup_container_fails_the_spawn_with_its_reason(hub, core):
    server = f"setup-crash-{uuid.uuid4().hex[:6]}"
    try:
        message = await spawn_failure(hub, "alice", server, {})
        assert (
            f"set-up container '{volumes.INIT_CONTAINER}' failed again after 1 restart "
            "(exit code 1)"
        ) in message, message
        assert message.endswith(
            "its last log lines:\nrefusing /home/jovyan: owned by uid 0, not by you"
        ), message
    finally:
        await call(hub, "DELETE", f"/users/alice/servers/{server}", {"remove": True})


async def test_refused_named_spawns_leave_nothing_behind(hub):
    # jupyterhub_config.d/10-hub.py allows 3 named servers: refusals must not use them up.
    refused = [f"refused-{i}-{uuid.uuid4().hex[:4]}" for i in range(3)]
    try:
        for server in refused:
            status, answer = await call(
                hub, "POST", f"/users/bob/servers/{server}", {"accelerator": "v70"}
            )
            assert status == 403, answer
        _, model = await call(hub, "GET", "/users/bob?include_stopped_servers=1")
        assert not set(refused) & set(model["servers"]), model["servers"]
        status, answer = await call(hub, "POST", "/users/bob/servers/fourth", {})
        assert status in (201, 202), answer
    finally:
        await stop_all(hub, "bob")


# -- Spawn links and the spawn page (issue 20, items 5, 6 and 10a): a link only pre-fills the
# form, starting a server takes the form's POST with its _xsrf; text that is not UTF-8 is a 400;
# a refusal shows its message only; cookies say SameSite=Lax. (Kept apart from the tests above.)


async def _page(hub, user, path, body: bytes | None = None):
    """(status, html, final path) of a hub page as the user's browser gets it (redirects
    followed)."""

    def fetch():
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if body is not None else {}
        request = urllib.request.Request(f"{hub.url}{path}", data=body, headers=headers)
        try:
            with hub.browsers[user].open(request, timeout=30) as response:
                return response.status, response.read().decode(errors="replace"), response.url
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace"), error.url

    status, text, url = await asyncio.to_thread(fetch)
    return status, text, urllib.parse.urlsplit(url).path


async def _form_action(hub, user):
    """The spawn form's action: /hub/spawn with the _xsrf token a real page posts with."""
    status, text, _ = await _page(hub, user, "/hub/spawn")
    assert status == 200, text[:500]
    return html.unescape(re.search(r'id="spawn_form"\s+action="([^"]+)"', text)[1])


async def _nothing_started(hub, core, user):
    _, model = await call(hub, "GET", f"/users/{user}")
    assert not model["servers"], model["servers"]
    pods = await core.list_namespaced_pod(hub.namespace)
    assert not [p.metadata.name for p in pods.items if not p.metadata.deletion_timestamp]


@pytest.mark.parametrize(
    "query", ["accelerator=a30", "opt-accelerator=a30&opt-size=small", "_xsrf=x"]
)
async def test_a_spawn_link_only_prefills_the_form_and_starts_nothing(hub, core, query):
    status, text, path = await _page(hub, "alice", f"/hub/spawn?{query}")
    assert (status, path) == (200, "/hub/spawn"), text[:500]
    if "a30" in query:
        assert "These choices come from a link: check them, then press Start." in text
        assert re.search(r'id="accelerator-a30" value="a30"\s*checked', text), "not pre-selected"
    assert "spawn-error-msg" not in text
    await _nothing_started(hub, core, "alice")
    assert "Failed to spawn single-user server with query arguments" not in hub.log()


@pytest.mark.parametrize(
    "user, query, status, message",
    [
        ("alice", "accelerator=h100", 400, "unknown accelerator &#39;h100&#39;"),
        (
            "alice",
            "accelerator=t4&namespace=kube-system",
            400,
            "unknown option &#39;namespace&#39; in the link",
        ),
        ("bob", "accelerator=v70", 403, "AMD Versal V70: not available to your groups"),
    ],
)
async def test_an_invalid_spawn_link_is_refused_on_the_form(
    hub, core, user, query, status, message
):
    got, text, path = await _page(hub, user, f"/hub/spawn?{query}")
    assert (got, path) == (status, "/hub/spawn"), text[:500]
    assert message in text.split("spawn-error-msg", 1)[1].split("</p>", 1)[0]
    await _nothing_started(hub, core, user)


async def test_text_that_is_not_utf8_is_a_400_in_a_link_and_in_the_form(hub, core):
    status, text, _ = await _page(hub, "alice", "/hub/spawn?accelerator=%ff%fe")
    assert status == 400 and "not valid UTF-8" in text, text[:500]
    action = await _form_action(hub, "alice")
    status, text, _ = await _page(hub, "alice", action, b"accelerator=%ff%fe&size--cpu=small")
    assert status == 400 and "not valid UTF-8" in text, text[:500]
    await _nothing_started(hub, core, "alice")


async def test_a_refused_form_shows_the_message_only(hub, core):
    action = await _form_action(hub, "bob")
    status, text, _ = await _page(hub, "bob", action, b"accelerator=v70")
    assert status == 403, text[:500]
    assert "Error: AMD Versal V70: not available to your groups</p>" in text
    assert "SpawnException" not in text and "reason=" not in text
    await _nothing_started(hub, core, "bob")


async def test_the_form_post_starts_the_server(hub, core):
    action = await _form_action(hub, "alice")
    try:
        status, text, path = await _page(hub, "alice", action, b"accelerator=cpu&size--cpu=small")
        assert status == 200 and path != "/hub/spawn", text[:500]
        _, model = await call(hub, "GET", "/users/alice")
        assert "" in model["servers"]
    finally:
        await stop_all(hub, "alice")


async def test_hub_cookies_say_samesite_lax(hub):
    jar = next(
        h.cookiejar
        for h in hub.browsers["alice"].handlers
        if isinstance(h, urllib.request.HTTPCookieProcessor)
    )
    cookies = {c.name: c.get_nonstandard_attr("SameSite") for c in jar}
    assert "jupyterhub-session-id" in cookies and cookies
    assert set(cookies.values()) == {"Lax"}, cookies


async def test_a_spawn_waits_while_the_scheduler_preempts_batch_for_it(hub, core, batch):
    # A batch job holds the farm's only A30, and its pod takes 8 s to stop (its shell, PID 1,
    # ignores SIGTERM): the scheduler preempts it for the notebook, which waits longer than
    # fail_fast_seconds for the A30 without being given up. The job runs in the hub's namespace,
    # as the job service's do, so the progress names it and its grace.
    image = catalog.load(catalog.default_path()).environments["cpu"].image
    pod = filler("x", "server2-a30", {"nvidia.com/gpu": "1"}, priority=False)
    pod["spec"]["containers"][0].update(image=image, command=["sh", "-c", "sleep 600"])
    pod["spec"].update(restartPolicy="Never", terminationGracePeriodSeconds=8)
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "a30-holder"},
        "spec": {"backoffLimit": 0, "template": {"spec": pod["spec"]}},
    }
    await batch.create_namespaced_job(hub.namespace, job)
    try:
        await spawn_on_the_held_a30(hub, core)
    finally:
        await batch.delete_namespaced_job(
            "a30-holder", hub.namespace, propagation_policy="Background"
        )


async def spawn_on_the_held_a30(hub, core):
    """Spawn on the A30 the Job a30-holder holds: the server starts there, and its progress
    names the batch job being stopped and its grace period."""

    async def holding_alone():
        """The batch pod runs on the A30's node, and earlier tests' pods have left it."""
        pods = await core.list_pod_for_all_namespaces(field_selector="spec.nodeName=server2-a30")
        return [(p.metadata.labels or {}).get("job-name") for p in pods.items] == [
            "a30-holder"
        ] and pods.items[0].status.phase == "Running"

    await wait_until(holding_alone, "the batch pod to run alone on the A30's node")
    server = f"preempt-{uuid.uuid4().hex[:6]}"
    spawn = asyncio.ensure_future(
        call(hub, "POST", f"/users/alice/servers/{server}", {"accelerator": "a30"})
    )

    async def nominated():
        pods = await server_pods(core, hub.namespace, "alice", server)
        return bool(pods) and pods[0].status.nominated_node_name == "server2-a30"

    try:
        # While the batch pod takes its 8 s to stop, the progress stream tells the user why.
        await wait_until(nominated, "the scheduler to nominate the A30's node")
        progress = asyncio.to_thread(read_progress, hub, "alice", server, threading.Event())
        events, (status, answer) = await asyncio.gather(progress, spawn)
        assert status in (201, 202), answer
        assert events[-1].get("ready"), events
        assert "Stopping 1 batch job on server2-a30 to make room for this server (up to 8 s)" in [
            e["message"] for e in events
        ], events
        pods = await server_pods(core, hub.namespace, "alice", server)
        assert pods[0].spec.node_name == "server2-a30"
    finally:
        await call(hub, "DELETE", f"/users/alice/servers/{server}", {"remove": True})


async def test_a_home_that_is_not_the_users_fails_the_spawn_with_the_storage_reason(hub):
    # The storage set-up refuses a home it did not make (docs/storage.md): the spawn says why.
    if os.geteuid() != 0:
        pytest.skip("the pod runner keeps uids apart only when the dev cluster runs as root")
    home = hub.storage_folders["aiinfn-home"] / "dora"
    home.mkdir(mode=0o755)  # root:root, as the kubelet makes a missing folder
    try:
        message = await spawn_failure(hub, "dora", "wrong-home", {})
        assert (
            f"set-up container '{volumes.INIT_CONTAINER}' failed again after 1 restart "
            "(exit code 1)"
        ) in message, message
        assert "folder dora on claim aiinfn-home: it belongs to uid 0, not to this user" in message
        assert "An admin must fix this" in message
    finally:
        await stop_all(hub, "dora")
        home.rmdir()
