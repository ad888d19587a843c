"""Software environments on the dev cluster, with real processes (pod runner) as real users.

alice (a curator: the envs-admins gid) publishes an environment into /envs from a notebook pod
while bob's Jupyter server runs (started directly with the notebook image's shipped Jupyter
configuration, not spawned through a hub: the kernel side is what is tested); bob's server lists
its kernel without a restart and runs code in it through the kernels REST and websocket API;
bob cannot write to /envs, clones the environment with one more package into ~/envs, runs code
in the clone's kernel, and a batch Job (as the job service builds it) runs in the clone; a Job
naming a missing environment fails with the reason in its log.
"""

from __future__ import annotations

import json
import os
import secrets

import pytest
from aiinfn_dev import devstorage
from aiinfn_dev.wheels import make_wheel
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from aiinfn_hub import catalog, volumes
from aiinfn_hub.identity import Identity
from aiinfn_hub.services.jobs.request import CloneRequest, JobRequest
from aiinfn_hub.storage_config import StorageSettings
from tests import jupyter_kernel
from tests.helpers import restricted_container, wait_until
from tests.unqueued_job import unqueued_clone, unqueued_job

pytestmark = pytest.mark.integration

IMAGE = "harbor.cloud.infn.it/ai-infn/cpu:2025.10"
CATALOG = catalog.load(catalog.default_path())
CURATORS_GID = 200031
ALICE = Identity(100031, {"envs-admins": CURATORS_GID})
BOB = Identity(100032, {"cms-ml": 200032})
SPEC = """\
name: hello
display_name: Hello (test)
description: published by the integration test
kind: venv
requirements: requirements.txt
layer_on_base: true
"""


@pytest.fixture(scope="module")
def pod_runner(devcluster):
    _, cluster = devcluster
    if cluster is None or "pod-runner" not in {p.name for p in cluster.status().processes}:
        pytest.skip("needs the dev cluster's pod runner (docs/devcluster.md, Pod runner)")
    if os.geteuid() != 0:
        pytest.skip("the users' ids are only real when the dev cluster runs as root")
    return cluster


def user_pod(name: str, username: str, identity: Identity, command: str) -> dict:
    """A notebook pod as the spawner builds its storage, running `command`."""
    storage = volumes.build(
        StorageSettings(), volumes.StorageUser(username, identity, ()), "1Gi", "64Mi", IMAGE
    )
    container = restricted_container("notebook", IMAGE, command=["sh", "-c", command])
    container["securityContext"] = volumes.container_security_context(identity)
    container["volumeMounts"] = storage.mounts
    container["env"] = [{"name": k, "value": v} for k, v in storage.environment.items()]
    container["env"].append(
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "automountServiceAccountToken": False,
            "restartPolicy": "Never",
            "securityContext": storage.security_context,
            "initContainers": storage.init_containers,
            "containers": [container],
            "volumes": storage.volumes,
        },
    }


async def run_pod(core, namespace: str, pod: dict) -> tuple[str, str]:
    """(phase, log) of the pod once it has ended."""
    await core.create_namespaced_pod(namespace, pod)

    async def ended():
        current = await core.read_namespaced_pod(pod["metadata"]["name"], namespace)
        return current.status.phase if current.status.phase in ("Succeeded", "Failed") else None

    phase = await wait_until(ended, f"pod {pod['metadata']['name']} to end", limit=120)
    log = await core.read_namespaced_pod_log(
        pod["metadata"]["name"], namespace, container="notebook"
    )
    return phase, log


def job(name: str, environment: str, code: str) -> dict:
    """bob's batch Job as the job service builds it, unsuspended and out of Kueue."""
    request = JobRequest(
        name=name, command=["python", "-c", code], environment=environment, volumes=["home"]
    )
    return unqueued_job(name, "bob", BOB, ("cms-ml",), request)


async def job_log(core, batch, namespace: str, name: str) -> tuple[bool, str]:
    async def done():
        current = await batch.read_namespaced_job(name, namespace)
        return current if (current.status.succeeded or current.status.failed) else None

    finished = await wait_until(done, f"job {name} to end", limit=120)
    pods = await core.list_namespaced_pod(namespace, label_selector=f"job-name={name}")
    log = await core.read_namespaced_pod_log(pods.items[0].metadata.name, namespace)
    return bool(finished.status.succeeded), log


class Jupyter:
    """bob's Jupyter server, through its REST and websocket API with its token."""

    def __init__(self, address: str, token: str) -> None:
        self.base, self.token = f"http://{address}:8888", token
        self.headers = {"Authorization": f"token {token}"}

    async def call(self, method: str, path: str, body: dict | None = None) -> dict:
        request = HTTPRequest(
            self.base + path, method, self.headers, json.dumps(body) if body is not None else None
        )
        return json.loads((await AsyncHTTPClient().fetch(request)).body)

    async def kernels(self) -> dict:
        return (await self.call("GET", "/api/kernelspecs"))["kernelspecs"]

    async def run(self, kernel_name: str, code: str) -> str:
        """What `code` prints in a new kernel of that name."""
        kernel = await self.call("POST", "/api/kernels", {"name": kernel_name})
        url = f"{self.base.replace('http', 'ws')}/api/kernels/{kernel['id']}/channels"
        return await jupyter_kernel.execute(url, self.token, code)


async def start_jupyter(core, namespace: str) -> Jupyter:
    token = secrets.token_hex(16)
    command = (
        f'exec jupyter server --ip="$POD_IP" --port=8888 --no-browser '
        f"--IdentityProvider.token={token}"
    )
    pod = user_pod("bob-jupyter", "bob", BOB, command)
    pod["spec"]["containers"][0]["ports"] = [{"containerPort": 8888}]
    await core.create_namespaced_pod(namespace, pod)

    async def ready():
        current = await core.read_namespaced_pod("bob-jupyter", namespace)
        statuses = current.status.container_statuses or []
        return current.status.pod_ip if statuses and statuses[0].ready else None

    return Jupyter(await wait_until(ready, "bob's Jupyter server to answer", limit=120), token)


async def test_published_environment_is_a_kernel_cloned_and_used_by_a_job(
    pod_runner, core, batch, namespace, storage
):
    folders = devstorage.claim_folders(storage)
    envs, public = folders["aiinfn-envs"], folders["aiinfn-shared"]
    os.chown(envs, 0, CURATORS_GID)  # as an admin makes the export (docs/storage.md)
    envs.chmod(0o2775)
    spec = public / "spec"
    spec.mkdir()
    hello = make_wheel(spec, "hello_aiinfn", "1.0", "VERSION = '1.0'\n")
    extra = make_wheel(spec, "extra_aiinfn", "3.0", "VALUE = 42\n")
    (spec / "requirements.txt").write_text(f"{hello.name}\n")
    (spec / "hello.yaml").write_text(SPEC)
    jupyter = await start_jupyter(core, namespace)
    assert not {k for k in await jupyter.kernels() if k.startswith(("envs-", "home-"))}

    publish = user_pod(
        "alice-publish", "alice", ALICE, "aiinfn envs publish /home/public/spec/hello.yaml"
    )
    phase, log = await run_pod(core, namespace, publish)
    assert phase == "Succeeded", log
    assert (envs / "hello").is_symlink() and (envs / "hello").resolve().stat().st_uid == ALICE.uid

    async def listed():
        return (await jupyter.kernels()).get("envs-hello")

    spec_seen = await wait_until(listed, "the published kernel in bob's running server")
    assert spec_seen["spec"]["display_name"] == "Hello (test)"
    code = "import hello_aiinfn, sys; print(hello_aiinfn.VERSION, sys.prefix)"
    assert await jupyter.run("envs-hello", code) == "1.0 /envs/hello\n"

    clone = (
        "if touch /envs/bob-was-here 2>/tmp/err; then exit 3; fi; cat /tmp/err; "
        f"aiinfn envs clone hello mine --add /home/public/spec/{extra.name}"
    )
    phase, log = await run_pod(core, namespace, user_pod("bob-clone", "bob", BOB, clone))
    assert phase == "Succeeded", log
    assert "Read-only file system" in log
    assert not (envs / "bob-was-here").exists()
    home_env = folders["aiinfn-home"] / "bob" / "envs" / "mine"
    assert home_env.stat().st_uid == BOB.uid

    both = "import hello_aiinfn as h, extra_aiinfn as e; print(h.VERSION, e.VALUE)"
    assert await jupyter.run("home-mine", both) == "1.0 42\n"

    await batch.create_namespaced_job(namespace, job("in-clone", "~/envs/mine", both))
    await batch.create_namespaced_job(namespace, job("missing", "envs/nope", "print(1)"))
    # A Bunshin copy of bob's notebook, in his environment (the notebook's image and volumes).
    bunshin = CloneRequest(
        name="bunshin", command=["python", "-c", both], environment="~/envs/mine"
    )
    notebook = user_pod("bob-jupyter", "bob", BOB, "true")
    await batch.create_namespaced_job(
        namespace, unqueued_clone("bunshin", "bob", ("cms-ml",), bunshin, notebook)
    )
    assert await job_log(core, batch, namespace, "in-clone") == (True, "1.0 42\n")
    assert await job_log(core, batch, namespace, "bunshin") == (True, "1.0 42\n")
    succeeded, log = await job_log(core, batch, namespace, "missing")
    assert not succeeded
    assert "software environment envs/nope not found or not readable by you (/envs/nope)" in log
