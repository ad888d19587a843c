"""helm-values/kueue-queues.yaml applied to a cluster: the admin's queue objects, unchanged but
for the namespace of the LocalQueues.

The file names the hub's namespace by a placeholder (`jupyterhub`); the demo and the tests put
the LocalQueues in the namespace they use instead. Everything else in the file (flavors,
ClusterQueues, priority classes) is cluster-wide and applied as it is. Used by the demo and the
tests; an admin applies the file itself.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Iterable

import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.utils import create_from_dict


DEFAULT_PATH = Path(__file__).resolve().parents[2] / "helm-values" / "kueue-queues.yaml"
API_GROUP = "kueue.x-k8s.io"
API_VERSION = "v1beta2"


def load(path: str | os.PathLike = DEFAULT_PATH) -> list[dict]:
    return [d for d in yaml.safe_load_all(Path(path).read_text()) if d]


def cluster_objects(documents: Iterable[dict]) -> list[dict]:
    """Everything cluster-wide: priority classes, flavors, ClusterQueues (in file order)."""
    return [d for d in documents if d["kind"] != "LocalQueue"]


def local_queues(documents: Iterable[dict], namespace: str) -> list[dict]:
    """The LocalQueues, moved into `namespace`."""
    result = []
    for document in documents:
        if document["kind"] == "LocalQueue":
            queue = copy.deepcopy(document)
            queue["metadata"]["namespace"] = namespace
            result.append(queue)
    return result


async def apply(api_client: client.ApiClient, documents: Iterable[dict]) -> None:
    """Server-side apply every object, in order (flavors before the queues that name them)."""
    for document in documents:
        await create_from_dict(api_client, document, apply=True)


async def queues_active(api_client: client.ApiClient, documents: Iterable[dict]) -> bool:
    """True once Kueue reports every ClusterQueue and LocalQueue among the documents Active
    (its flavors, or its ClusterQueue, found)."""
    api = client.CustomObjectsApi(api_client)
    for document in documents:
        name = document["metadata"]["name"]
        if document["kind"] == "ClusterQueue":
            queue = await api.get_cluster_custom_object(API_GROUP, API_VERSION, "clusterqueues", name)
        elif document["kind"] == "LocalQueue":
            queue = await api.get_namespaced_custom_object(API_GROUP, API_VERSION, document["metadata"]["namespace"],
                                                           "localqueues", name)
        else:
            continue
        conditions = queue.get("status", {}).get("conditions", [])
        if not any(c["type"] == "Active" and c["status"] == "True" for c in conditions):
            return False
    return True
