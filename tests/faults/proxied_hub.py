"""A test hub (tests/hub.py's start_hub, as the ServiceAccount `hub` with the shipped RBAC) whose
Kubernetes API server is reached through a FaultProxy: the drills' one hub per module."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import yaml
from aiinfn_dev import devstorage, hubaccount, kueue_config
from kubernetes_asyncio import client

from aiinfn_hub import labels
from tests.faults.fault_proxy import FaultProxy
from tests.helpers import has_default_service_account, wait_until
from tests.hub import Hub, start_hub, stop_hub


def _cluster(kubeconfig: Path, folder: Path) -> tuple[str, Path]:
    """(server, CA path) of the admin kubeconfig's first cluster (a CA given inline is written
    to `folder`)."""
    config = yaml.safe_load(kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    if "certificate-authority-data" in cluster:
        path = folder / "upstream-ca.crt"
        path.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
        return cluster["server"], path
    return cluster["server"], kubeconfig.parent / cluster["certificate-authority"]


@contextlib.asynccontextmanager
async def proxied_hub(
    api_client: client.ApiClient,
    kubeconfig: Path,
    folder: Path,
    users: dict[str, dict],
    spawner_config: dict[str, object],
    extra_config: Sequence[str] = (),
    kueue_documents: list[dict] | None = None,
) -> AsyncIterator[tuple[Hub, FaultProxy]]:
    """(hub, proxy): a fresh "restricted" namespace with the storage claims bound (and the
    projects' LocalQueues with `kueue_documents`), the hub account's kubeconfig rewritten to the
    proxy (`folder`/proxy.kubeconfig, for a service beside the hub too); all removed on exit.
    `kubeconfig` is the cluster admin's, used only to set this up."""
    core = client.CoreV1Api(api_client)
    namespace = f"t-fault-{uuid.uuid4().hex[:8]}"
    restricted = {
        labels.POD_SECURITY_ENFORCE: "restricted",
        labels.POD_SECURITY_ENFORCE_VERSION: "latest",
    }
    await core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace, labels=restricted))
    )
    server, ca = _cluster(kubeconfig, folder)
    proxy = FaultProxy(server, ca, folder / "proxy-pki")
    storage: list[dict] = []
    try:
        await wait_until(lambda: has_default_service_account(core, namespace), "service account")
        storage = await devstorage.setup(api_client, namespace, folder / "storage")
        await wait_until(
            lambda: devstorage.claims_bound(api_client, namespace, storage), "the storage claims"
        )
        if kueue_documents is not None:
            queues = kueue_config.local_queues(kueue_documents, namespace)
            await kueue_config.apply(api_client, queues)
            await wait_until(
                lambda: kueue_config.queues_active(api_client, queues), "LocalQueues active"
            )
        account = await hubaccount.hub_kubeconfig(
            api_client, namespace, kubeconfig, folder / "hub.kubeconfig"
        )
        await asyncio.to_thread(proxy.start)
        proxied = proxy.kubeconfig(account, folder / "proxy.kubeconfig")
        hub, responder = await asyncio.to_thread(
            start_hub, folder, proxied, namespace, users, spawner_config, extra_config
        )
        hub.storage_folders = devstorage.claim_folders(storage)
        try:
            yield hub, proxy
        finally:
            await asyncio.to_thread(stop_hub, hub, responder)
    finally:
        if proxy.url:
            await asyncio.to_thread(proxy.stop)
        await core.delete_namespace(namespace)
        await hubaccount.delete_cluster_objects(api_client, namespace)
        await devstorage.delete_volumes(api_client, storage)
