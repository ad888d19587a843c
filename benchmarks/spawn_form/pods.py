"""The pods the benchmark creates: bound, restricted-compliant, within every node's capacity."""

from __future__ import annotations

import random
from typing import Any

from aiinfn_dev.devcluster import topology

from aiinfn_hub.catalog import Catalog
from aiinfn_hub.labels import KUEUE_QUEUE, VIRTUAL_NODE, VIRTUAL_NODE_VALUE

from .settings import BATCH_NAMESPACES, BENCH_LABEL, IMAGES, NOTEBOOK_NAMESPACES

# (kind, resource, count, batch, node) of one pod
Spec = tuple[str, "str | None", int, bool, str]


def restricted_pod(
    name: str, namespace: str, node: str, kind: str, resource: str | None, count: int, batch: bool
) -> dict[str, Any]:
    """A bound pod that passes Pod Security "restricted"."""
    resources: dict[str, Any] = {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    if resource:
        resources["requests"][resource] = str(count)
        resources["limits"][resource] = str(count)
    labels = {
        "app.kubernetes.io/name": "bench-batch" if batch else "bench-notebook",
        "app.kubernetes.io/part-of": "aiinfn-hub-bench",
        BENCH_LABEL: "true",
    }
    if batch:
        labels[KUEUE_QUEUE] = "x"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "nodeName": node,
            "automountServiceAccountToken": False,
            "restartPolicy": "Never" if batch else "Always",
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "main",
                    "image": IMAGES[kind],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "runAsNonRoot": True,
                        "runAsUser": 1000,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "resources": resources,
                }
            ],
        },
    }


def schedulable_nodes(
    topology_name: str, kinds: dict[str, str]
) -> list[tuple[str, dict[str, int], int]]:
    """(name, accelerator units by resource, pod slots) of each node a bound pod may go to."""
    nodes = []
    for manifest in topology.node_manifests(topology_name):
        labels = manifest["metadata"]["labels"]
        if manifest["spec"]["taints"] or labels.get(VIRTUAL_NODE) == VIRTUAL_NODE_VALUE:
            continue  # the interLink virtual node and anything tainted
        allocatable = manifest["status"]["allocatable"]
        offers = {r: int(v) for r, v in allocatable.items() if r in kinds}
        nodes.append((manifest["metadata"]["name"], offers, int(allocatable["pods"])))
    return nodes


def accelerator_specs(
    nodes: list[tuple[str, dict[str, int], int]],
    kinds: dict[str, str],
    slots: dict[str, int],
    budget: int,
    rng: random.Random,
) -> list[Spec]:
    """Accelerator pods filling each node's units to 0-100%, at most `budget` of them; takes
    their places from `slots`."""
    specs: list[Spec] = []
    for name, offers, _ in nodes:
        for resource, capacity in offers.items():
            left = int(capacity * rng.choice((0.0, 0.5, 0.75, 1.0)))
            while left > 0 and budget > 0 and slots[name] > 0:
                count = 2 if kinds[resource] == "gpu" and left >= 2 and rng.random() < 0.25 else 1
                specs.append((kinds[resource], resource, count, rng.random() < 0.35, name))
                left -= count
                budget -= 1
                slots[name] -= 1
    return specs


def plan_pods(
    topology_name: str, catalog: Catalog, total: int, seed: int = 7
) -> list[dict[str, Any]]:
    """`total` bound pods over the topology's schedulable nodes, within every node's capacity:
    accelerator pods fill each node's units to 0-100% (so some nodes are full, some free), at
    most 40% of all pods; the rest ask for CPU only. About a third are batch (Kueue label)."""
    rng = random.Random(seed)
    kinds = {a.resource: a.kind for a in catalog.accelerators.values() if a.resource}
    nodes = schedulable_nodes(topology_name, kinds)
    slots = {name: pods for name, _, pods in nodes}
    specs = accelerator_specs(nodes, kinds, slots, int(total * 0.4), rng)
    names = [name for name, _, _ in nodes]
    index = 0
    while len(specs) < total:
        name = names[index % len(names)]
        index += 1
        if slots[name] > 0:
            slots[name] -= 1
            specs.append(("cpu", None, 0, rng.random() < 0.35, name))
        elif not any(slots.values()):
            raise SystemExit(f"topology {topology_name} has no room for {total} pods")
    rng.shuffle(specs)
    pods = []
    for i, (kind, resource, count, batch, node) in enumerate(specs):
        namespaces = BATCH_NAMESPACES if batch else NOTEBOOK_NAMESPACES
        pods.append(
            restricted_pod(
                f"{'job' if batch else 'nb'}-{i:05d}",
                namespaces[i % 2],
                node,
                kind,
                resource,
                count,
                batch,
            )
        )
    return pods


def pod_mix(pods: list[dict[str, Any]], catalog: Catalog) -> dict[str, int]:
    """How many pods of each "<accelerator kind> <notebook|batch>", sorted by that name."""
    catalog_kinds = {a.resource: a.kind for a in catalog.accelerators.values() if a.resource}
    mix: dict[str, int] = {}
    for pod in pods:
        limits = pod["spec"]["containers"][0]["resources"]["limits"]
        kind = next((catalog_kinds[r] for r in limits if r in catalog_kinds), "cpu")
        role = "batch" if KUEUE_QUEUE in pod["metadata"]["labels"] else "notebook"
        mix[f"{kind} {role}"] = mix.get(f"{kind} {role}", 0) + 1
    return dict(sorted(mix.items()))
