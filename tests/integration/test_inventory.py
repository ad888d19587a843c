"""The inventory watcher against the real API server: pods and Jobs move the counts of their node,
and a watch cut mid-stream resumes from its resourceVersion and converges to a recount.

Other tests use the same cluster at the same time, so nothing here asserts global numbers: the
watcher's view must equal a recount built from a fresh LIST, and the effect of this test's own
pods is that recount minus the same LIST without this test's namespaces.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from aiinfn_hub import catalog, k8s, labels
from aiinfn_hub.inventory import Inventory
from aiinfn_hub.inventory_watch import InventoryWatcher
from tests.helpers import (
    has_default_service_account,
    restricted_container,
    restricted_pod,
    wait_until,
)

pytestmark = pytest.mark.integration

ACCELERATORS = catalog.load(catalog.default_path()).accelerators
GPU = "nvidia.com/gpu"
T4_NODE = "server1-t4"
T4_ON_NODE = ("t4", T4_NODE)


async def _items(method, **kwargs) -> list[dict]:
    response = await method(_preload_content=False, **kwargs)
    try:
        return json.loads(await response.read())["items"]
    finally:
        response.release()


async def converged(inventory: Inventory, core: client.CoreV1Api, namespaces: set[str]):
    """(recount, recount without `namespaces`) from one fresh LIST if the watcher's view equals
    the recount, else None (the watcher may be behind or ahead of the LIST: poll)."""
    nodes = await _items(core.list_node)
    pods = await _items(core.list_pod_for_all_namespaces)
    full, without = Inventory(ACCELERATORS), Inventory(ACCELERATORS)
    full.reset(nodes, pods)
    without.reset(nodes, [p for p in pods if p["metadata"]["namespace"] not in namespaces])
    if inventory.per_node() != full.per_node() or inventory.snapshot() != full.snapshot():
        return None
    assert inventory.snapshot() == inventory.recount()
    return full, without


def mine(full: Inventory, without: Inventory, key=T4_ON_NODE) -> tuple[int, int]:
    """(notebook units, batch units) that this test's pods hold on one node."""
    a, b = full.per_node()[key], without.per_node()[key]
    return a.notebooks - b.notebooks, a.batch - b.batch


async def wait_for_mine(inventory, core, namespaces, expected: tuple[int, int], what: str):
    async def check():
        result = await converged(inventory, core, namespaces)
        return result if result and mine(*result) == expected else None

    return await wait_until(check, what)


def gpu_pod(name: str, node: str = T4_NODE) -> dict:
    body = restricted_pod(name, limits={GPU: "1"})
    body["spec"]["nodeName"] = node  # bound at once: "pending-bound" counts as well as Running
    return body


@pytest_asyncio.fixture(loop_scope="session")
async def watcher(api_client):
    watcher = InventoryWatcher(api_client, Inventory(ACCELERATORS))
    await asyncio.wait_for(watcher.start(), 60)
    try:
        yield watcher
    finally:
        await watcher.stop()


async def test_the_initial_lists_match_a_recount(watcher, core):
    assert watcher.synced.is_set()
    assert await wait_until(lambda: converged(watcher.inventory, core, set()), "a recount to match")
    assert watcher.inventory.per_node()[T4_ON_NODE].total == 8
    # The interLink virtual nodes (remote sites, two with GPUs) are not notebook capacity.
    sites = {"interlink-infn-t1", "vk-podman-vm", "vk-leonardo-slurm", "vk-hpc-bubble-slurm"}
    assert not [key for key in watcher.inventory.per_node() if key[1] in sites]


async def test_notebook_pods_count_on_their_node_until_deleted(watcher, core, namespace):
    for name in ("nb-1", "nb-2"):
        await core.create_namespaced_pod(namespace, gpu_pod(name))
    full, _ = await wait_for_mine(watcher.inventory, core, {namespace}, (2, 0), "two notebook GPUs")
    assert watcher.inventory.per_node()[T4_ON_NODE].notebooks >= 2
    assert watcher.inventory.largest_free_block("t4") == max(
        c.free for (key, _), c in full.per_node().items() if key == "t4"
    )

    for name in ("nb-1", "nb-2"):
        await core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    await wait_for_mine(
        watcher.inventory, core, {namespace}, (0, 0), "the notebook GPUs to be free"
    )


async def test_job_pods_in_another_namespace_count_as_batch_until_they_finish(
    watcher, core, batch, namespace
):
    other = f"t-{uuid.uuid4().hex[:10]}"
    await core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(
                name=other,
                labels={
                    labels.POD_SECURITY_ENFORCE: "restricted",
                    labels.POD_SECURITY_ENFORCE_VERSION: "latest",
                    labels.MANAGED_BY: "aiinfn-hub-tests",
                },
            )
        )
    )
    try:
        await wait_until(
            lambda: has_default_service_account(core, other), "default service account"
        )

        def job(name: str, delay: str) -> dict:
            return {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": name},
                "spec": {
                    "backoffLimit": 0,
                    "template": {
                        "metadata": {
                            "annotations": {"pod-complete.stage.kwok.x-k8s.io/delay": delay}
                        },
                        "spec": {
                            "restartPolicy": "Never",
                            "automountServiceAccountToken": False,
                            "nodeName": T4_NODE,
                            "containers": [restricted_container(limits={GPU: "1"})],
                        },
                    },
                },
            }

        await batch.create_namespaced_job(other, job("long", "300s"))
        await batch.create_namespaced_job(other, job("short", "1s"))
        await core.create_namespaced_pod(namespace, gpu_pod("notebook"))
        namespaces = {namespace, other}

        async def short_succeeded():
            pods = (await core.list_namespaced_pod(other, label_selector="job-name=short")).items
            return pods and all(p.status.phase == "Succeeded" for p in pods)

        await wait_until(short_succeeded, "the short Job's pod to succeed")
        # The long Job's pod is batch; the finished one (still listed, Succeeded) holds nothing.
        await wait_for_mine(
            watcher.inventory, core, namespaces, (1, 1), "one notebook and one batch GPU"
        )

        await batch.delete_namespaced_job("long", other, propagation_policy="Background")
        await wait_for_mine(
            watcher.inventory, core, namespaces, (1, 0), "the batch GPU to be released"
        )
    finally:
        await core.delete_namespace(other)


class Relay:
    """A real TCP hop on 127.0.0.1 between a client and the API server, which a test can cut:
    every open connection is reset and new ones are refused until `heal()`."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.refusing = False
        self.port = 0
        self._transports: set[asyncio.BaseTransport] = set()
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        pair = {writer.transport, upstream_writer.transport}
        self._transports |= pair
        try:
            await asyncio.gather(
                self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer)
            )
        finally:
            for transport in pair:
                transport.abort()
            self._transports -= pair

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()

    def cut(self) -> None:
        self.refusing = True
        for transport in list(self._transports):
            transport.abort()

    def heal(self) -> None:
        self.refusing = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def test_a_watch_cut_mid_stream_resumes_from_its_resource_version(
    devcluster, api_client, core, namespace
):
    target = urlsplit(api_client.configuration.host)
    relay = Relay(target.hostname, target.port)
    await relay.start()
    api = await k8s.api_client(str(devcluster[0]))
    api.configuration.host = f"https://127.0.0.1:{relay.port}"
    # A short server-side timeout as well, so the resume-after-a-clean-end path runs too.
    watcher = InventoryWatcher(api, Inventory(ACCELERATORS), watch_timeout=4, backoff_cap=2.0)
    try:
        async with api:
            try:
                await asyncio.wait_for(watcher.start(), 60)
                await core.create_namespaced_pod(namespace, gpu_pod("before"))
                await wait_for_mine(watcher.inventory, core, {namespace}, (1, 0), "the first pod")

                errors = watcher.stats["errors"]
                relay.cut()
                await wait_until(
                    lambda: _true(watcher.stats["errors"] > errors), "the watcher to see the cut"
                )
                # While the watcher is blind: one pod goes, two come.
                await core.delete_namespaced_pod("before", namespace, grace_period_seconds=0)
                await core.create_namespaced_pod(namespace, gpu_pod("during-1"))
                await core.create_namespaced_pod(namespace, gpu_pod("during-2"))
                relay.heal()

                await wait_for_mine(
                    watcher.inventory, core, {namespace}, (2, 0), "the watcher to catch up"
                )
                # It resumed from its resourceVersion: no relist beyond the initial two.
                assert watcher.stats["relists"] == 2 and watcher.stats["expired"] == 0
            finally:
                await watcher.stop()
    finally:
        await relay.close()


async def _true(value: bool) -> bool:
    return value
