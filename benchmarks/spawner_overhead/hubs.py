"""The benchmark's dev cluster, its namespace (storage, the hub account) and the two hubs.

Both hubs are real JupyterHub processes (tests/hub.py) in the same namespace, as the
ServiceAccount `hub` with the shipped RBAC; one runs AiInfnSpawner (the repository's
configuration), the other plain KubeSpawner whose pod is made the same as AiInfnSpawner's
(`SAME_POD_HOOK`, from the pod AiInfnSpawner created in its warm-up spawn).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from aiinfn_dev import devstorage, hubaccount
from aiinfn_dev.devcluster.cluster import DevCluster
from aiinfn_dev.devcluster.processes import free_port
from kubernetes_asyncio import client
from measuring import say

from aiinfn_hub import k8s, labels
from tests.hub import REPO, Hub, start_hub, stop_hub

NAMESPACE = "bench-overhead"
GROUPS = ["cms-ml"]
USERS = {"aiinfn": "alice", "plain": "bruno"}  # same length: same pod name length
SPAWNER = {"default_policy": {"accelerators": ["cpu"], "environments": "*"}}
# A fixed stand-in for the OIDC access token, so AiInfnSpawner writes its token Secret.
AUTH_STATE = {"access_token": "bench." + "x" * 40}
COMMON = ["c.Authenticator.enable_auth_state = True"]
PLAIN = ["c.JupyterHub.spawner_class = 'kubespawner.KubeSpawner'"]
# Plain KubeSpawner's pod gets every spec field AiInfnSpawner's pod has; its own env, names and
# labels stay (the hub's token and URLs are per server).
SAME_POD_HOOK = """
import json as _json
with open({path!r}) as _file:
    _SAME = _json.load(_file)
_SPEC = (("volumes", "volumes"), ("init_containers", "initContainers"),
         ("affinity", "affinity"), ("tolerations", "tolerations"),
         ("priority_class_name", "priorityClassName"), ("security_context", "securityContext"),
         ("node_selector", "nodeSelector"),
         ("automount_service_account_token", "automountServiceAccountToken"))
_CONTAINER = (("image", "image"), ("resources", "resources"),
              ("security_context", "securityContext"), ("volume_mounts", "volumeMounts"),
              ("working_dir", "workingDir"))
def _same_pod(spawner, pod):
    spec, same = pod.spec, _SAME["spec"]
    for attribute, key in _SPEC:
        setattr(spec, attribute, same.get(key))
    container, theirs = spec.containers[0], same["containers"][0]
    for attribute, key in _CONTAINER:
        setattr(container, attribute, theirs.get(key))
    own = {{e["name"] if isinstance(e, dict) else e.name for e in container.env or ()}}
    container.env = [*(container.env or ()),
                     *(e for e in theirs.get("env", []) if e["name"] not in own)]
    pod.metadata.labels = {{**_SAME["metadata"].get("labels", {{}}), **pod.metadata.labels}}
    return pod
c.KubeSpawner.modify_pod_hook = _same_pod
"""


def start_cluster(cleanup: list) -> tuple[DevCluster, dict[str, Any]]:
    """The cluster named by $AIINFN_DEVCLUSTER_NAME (default "bench-overhead"), pod runner off:
    kwok marks the pods Running, no JupyterLab runs (the hubs reach a stand-in instead)."""
    name = os.environ.get("AIINFN_DEVCLUSTER_NAME", "bench-overhead")
    port = int(os.environ.get("AIINFN_DEVCLUSTER_PORT") or free_port())
    cluster = DevCluster(name=name, port=port, log=say, pod_runner=False)
    started = time.monotonic()
    if cluster.up(timeout=600):
        cleanup.append(cluster.down)
    return cluster, {"name": name, "up_s": round(time.monotonic() - started, 1)}


async def fresh_namespace(core: client.CoreV1Api, limit: float = 120.0) -> None:
    """Create NAMESPACE, first waiting for the one of an earlier run to finish terminating."""
    body = {
        "metadata": {
            "name": NAMESPACE,
            "labels": {
                labels.POD_SECURITY_ENFORCE: "restricted",
                labels.MANAGED_BY: "aiinfn-hub-bench",
            },
        }
    }
    deadline = time.monotonic() + limit
    while True:
        try:
            await core.create_namespace(body)
            return
        except client.ApiException as error:
            if error.status != 409 or time.monotonic() > deadline:
                raise
        say(f"namespace {NAMESPACE} still there from an earlier run: waiting")
        await asyncio.sleep(2.0)


async def prepare_namespace(
    api: client.ApiClient, kubeconfig: Path, tmp: Path, cleanup: list
) -> Path:
    """A restricted namespace with the priority classes, the storage claims (bound to local
    folders) and the hub account; returns the account's kubeconfig."""
    await k8s.apply_objects(api, REPO / "helm-values" / "priority-classes.yaml")
    core = client.CoreV1Api(api)
    await fresh_namespace(core)
    cleanup.append(lambda: core.delete_namespace(NAMESPACE))
    storage = await devstorage.setup(api, NAMESPACE, tmp / "storage")
    cleanup.append(lambda: devstorage.delete_volumes(api, storage))
    deadline = time.monotonic() + 120
    while not await devstorage.claims_bound(api, NAMESPACE, storage):
        if time.monotonic() > deadline:
            raise SystemExit("the storage claims were never bound")
        await asyncio.sleep(0.5)
    account = await hubaccount.hub_kubeconfig(api, NAMESPACE, kubeconfig, tmp / "hub.kubeconfig")
    cleanup.append(lambda: hubaccount.delete_cluster_objects(api, NAMESPACE))
    return account


async def start_one(variant: str, account: Path, tmp: Path, cleanup: list, extra: list[str]) -> Hub:
    """One hub with its one user given AUTH_STATE. The AiInfnSpawner user logs in (the login
    gives the groups, and so the project volumes); plain KubeSpawner has no form, so a login
    would start its server at once: that user is made through the REST API instead."""
    folder = tmp / variant
    folder.mkdir()
    user = USERS[variant]
    env = {"JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32)}
    login = {user: {"groups": GROUPS}} if variant == "aiinfn" else {}
    hub, responder = await asyncio.to_thread(
        start_hub, folder, account, NAMESPACE, login, SPAWNER, [*COMMON, *extra], env
    )
    cleanup.append(lambda: asyncio.to_thread(stop_hub, hub, responder))
    if not login:
        status, answer = await asyncio.to_thread(hub.request, "POST", f"/users/{user}")
        if status != 201:
            raise SystemExit(f"making the user {user} failed: {status} {answer}")
    status, answer = await asyncio.to_thread(
        hub.request, "PATCH", f"/users/{user}", {"auth_state": AUTH_STATE}
    )
    if status != 200:
        raise SystemExit(f"setting the auth state of {user} failed: {status} {answer}")
    return hub


async def start_plain(account: Path, tmp: Path, cleanup: list, pod: dict) -> Hub:
    """The plain KubeSpawner hub, its pod made the same as `pod` (AiInfnSpawner's)."""
    path = tmp / "same-pod.json"
    path.write_text(json.dumps(pod))
    image = pod["spec"]["containers"][0]["image"]  # also in the environment KubeSpawner sets
    return await start_one(
        "plain",
        account,
        tmp,
        cleanup,
        [*PLAIN, f"c.KubeSpawner.image = {image!r}", SAME_POD_HOOK.format(path=str(path))],
    )
