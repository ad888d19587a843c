"""The per-project cluster objects, made from the catalog: each project's storage (a
PersistentVolume and its claim) and its job queues (a Kueue ClusterQueue holding the project's
quota, and the LocalQueue the job service submits to). Pure: `aiinfn-hub render` (render.py)
reads the files and prints what `project_objects` returns, so adding a project is one catalog
edit and one command, never three hand-kept files.

Quotas, from the Kueue flavors (helm-values/kueue-queues.yaml, in the order queues try them) and
the cluster's nodes. A flavor's nodes are those with all its labels whose scheduling taints it
lists; an accelerator flavor (named as the catalog accelerator) counts only the nodes that
publish the accelerator's resource, and a node shared by several flavors (MIG slices of one GPU)
gives each a part of its CPUs and memory in proportion to the units it publishes for it.
- Each project owns a part of every catalog flavor, in proportion to its `batch_share`: whole
  units of the accelerator (the largest remainders first, ties to the project that got the
  fewest such extra units in the flavors before, then in catalog order), and the flavor's CPUs
  and memory in proportion to the units it owns. The parts add up to the flavor.
- A project may borrow idle units of the others up to its own part again (at least one unit),
  CPU and memory without limit; an owner takes its part back by preemption (the ClusterQueue's
  policy).
- A flavor that is no catalog accelerator (a remote site's interLink virtual node) is not
  rationed: each project's quota is all of it, and the site's batch system queues what exceeds
  it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from . import labels, names
from .admin_files import QUANTITY_PATTERN
from .catalog import Catalog, Project
from .services.jobs.capacity import SCHEDULING_EFFECTS, quantity
from .services.jobs.plan import queue_name
from .storage_config import DNS_LABEL, StorageSettings
from .volumes import project_claim

COHORT = "aiinfn"
GI = 2**30
KUEUE_API = "kueue.x-k8s.io/v1beta2"


class RenderError(ValueError):
    """The inputs cannot make the objects; the message says which and why."""


@dataclass(frozen=True)
class ProjectStorage:
    """How each project's folder is served: one NFS export for all, a sub-directory each."""

    nfs_server: str = "10.96.20.49"
    nfs_path: str = "/export/projects"
    size: str = "10Ti"
    claim_prefix: str = StorageSettings().project_claim_prefix
    mount_options: tuple[str, ...] = ("nfsvers=4.2", "hard", "noatime")
    # The export's root on the server: users' init containers make the project folders there.
    root_mode: str = "1733"


@dataclass(frozen=True)
class FlavorSize:
    """What a flavor's nodes hold: whole CPUs, whole GiB of memory, units of each extended
    resource. `rationed`: the flavor is a catalog accelerator, shared out between projects."""

    name: str
    resource: str | None
    cpu: int
    memory_gi: int
    units: Mapping[str, int] = field(default_factory=dict)
    rationed: bool = True


Quota = dict[str, tuple[Any, int | None]]  # resource -> (nominal quota, borrowing limit or None)


# -- the flavors' sizes ---------------------------------------------------------------------------


def _selects(flavor: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """Kueue's flavor-to-node rule: every flavor label on the node, every scheduling taint of
    the node listed by the flavor (its taints or tolerations)."""
    spec = flavor.get("spec") or {}
    node_labels = node["metadata"].get("labels") or {}
    allowed = [*(spec.get("nodeTaints") or ()), *(spec.get("tolerations") or ())]
    taints = [
        t
        for t in (node.get("spec") or {}).get("taints") or ()
        if t.get("effect") in SCHEDULING_EFFECTS
    ]
    return (spec.get("nodeLabels") or {}).items() <= node_labels.items() and all(
        any(_same_taint(t, a) for a in allowed) for t in taints
    )


def _same_taint(taint: Mapping[str, Any], allowed: Mapping[str, Any]) -> bool:
    return all(allowed.get(k, "") == taint.get(k, "") for k in ("key", "value", "effect"))


def _allocatable(node: Mapping[str, Any], resource: str) -> Fraction:
    amount = ((node.get("status") or {}).get("allocatable") or {}).get(resource, 0)
    return Fraction(quantity(amount))


def flavor_sizes(
    catalog: Catalog, flavors: Sequence[Mapping[str, Any]], nodes: Sequence[Mapping[str, Any]]
) -> list[FlavorSize]:
    """Each flavor's size, in the flavors' order; every catalog accelerator needs its flavor."""
    flavor_names = [f["metadata"]["name"] for f in flavors]
    missing = [key for key in catalog.accelerators if key not in flavor_names]
    if missing:
        raise RenderError(f"no ResourceFlavor for the catalog accelerator(s) {', '.join(missing)}")
    users: dict[str, list[tuple[str, Fraction]]] = {}  # node -> (flavor, weight) sharing it
    for flavor in flavors:
        accelerator = catalog.accelerators.get(flavor["metadata"]["name"])
        if accelerator is None:
            continue
        for node in nodes:
            weight = _allocatable(node, accelerator.resource) if accelerator.resource else 1
            if weight and _selects(flavor, node):
                users.setdefault(node["metadata"]["name"], []).append(
                    (flavor["metadata"]["name"], Fraction(weight))
                )
    return [_size(catalog, flavor, nodes, users) for flavor in flavors]


def _size(
    catalog: Catalog,
    flavor: Mapping[str, Any],
    nodes: Sequence[Mapping[str, Any]],
    users: Mapping[str, list[tuple[str, Fraction]]],
) -> FlavorSize:
    name = flavor["metadata"]["name"]
    accelerator = catalog.accelerators.get(name)
    cpu, memory = Fraction(0), Fraction(0)
    units: dict[str, int] = {}
    for node in nodes:
        if accelerator is None:
            part = Fraction(1) if _selects(flavor, node) else Fraction(0)
        else:
            sharing = users.get(node["metadata"]["name"], [])
            own = sum((w for f, w in sharing if f == name), Fraction(0))
            part = own / sum((w for _, w in sharing), Fraction(0)) if own else Fraction(0)
        if not part:
            continue
        cpu += part * _allocatable(node, "cpu")
        memory += part * _allocatable(node, "memory")
        for resource in _extended(catalog):
            units[resource] = units.get(resource, 0) + int(_allocatable(node, resource))
    if accelerator is not None:
        units = (
            {accelerator.resource: units.get(accelerator.resource, 0)}
            if accelerator.resource
            else {}
        )
    return FlavorSize(
        name,
        accelerator.resource if accelerator else None,
        int(cpu),
        int(memory / GI),
        units,
        rationed=accelerator is not None,
    )


def _extended(catalog: Catalog) -> list[str]:
    """The catalog's extended resources, in catalog order, each once."""
    return list(dict.fromkeys(a.resource for a in catalog.accelerators.values() if a.resource))


# -- sharing out --------------------------------------------------------------------------------


def split(total: int, weights: Sequence[int], extras: Sequence[int] | None = None) -> list[int]:
    """`total` whole units in proportion to `weights`, adding up to `total` (nothing if every
    weight is 0). The units left after the whole parts go to the largest remainders; ties to the
    fewest `extras` (units got so before), then to the first."""
    weight_sum = sum(weights)
    if not weight_sum:
        return [0] * len(weights)
    exact = [Fraction(total * w, weight_sum) for w in weights]
    parts = [int(e) for e in exact]
    extras = extras or [0] * len(weights)
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - parts[i]), extras[i], i))
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts


def quotas(
    projects: Sequence[Project], sizes: Sequence[FlavorSize], resources: Sequence[str]
) -> list[dict[str, Quota]]:
    """Per project (in order), per flavor, its quota of every covered resource."""
    weights = [p.batch_share for p in projects]
    if projects and not any(weights):
        raise RenderError("every project has batch_share 0: none would own any quota")
    extras = [0] * len(projects)
    result: list[dict[str, Quota]] = [{} for _ in projects]
    for size in sizes:
        if not size.rationed:
            whole = {"cpu": size.cpu, "memory": _memory(size.memory_gi), **size.units}
            for quota in result:
                quota[size.name] = {r: (whole.get(r, 0), None) for r in resources}
            continue
        owned: list[int] | None = None
        if size.resource:
            owned = split(size.units[size.resource], weights, extras)
            exact = [Fraction(size.units[size.resource] * w, sum(weights)) for w in weights]
            extras = [e + (o > x) for e, o, x in zip(extras, owned, exact, strict=True)]
        shares = owned if owned is not None else weights
        cpus, memory = split(size.cpu, shares), split(size.memory_gi, shares)
        for i, quota in enumerate(result):
            entry: Quota = {r: (0, None) for r in resources}
            entry.update(cpu=(cpus[i], None), memory=(_memory(memory[i]), None))
            if size.resource and owned is not None:  # owned: exactly when there is a resource
                entry[size.resource] = (owned[i], max(owned[i], 1))
            quota[size.name] = entry
    return result


def _memory(gi: int) -> int | str:
    if not gi:
        return 0
    return f"{gi // 1024}Ti" if gi % 1024 == 0 else f"{gi}Gi"


# -- the objects ----------------------------------------------------------------------------------


def _labels(project: Project, component: str | None = None) -> dict[str, str]:
    result = {labels.PART_OF: labels.PART_OF_VALUE}
    if component:
        result[labels.COMPONENT] = component
    result[labels.PROJECT] = names.label_value(project.key)
    return result


def make_cluster_queue(
    project: Project, resources: Sequence[str], quota: Mapping[str, Quota]
) -> dict[str, Any]:
    """The project's ClusterQueue: its quota per flavor (in the order Kueue tries them), in the
    shared cohort; priority decides within the project, owners reclaim what they lent."""
    flavors = [
        {
            "name": flavor,
            "resources": [
                _resource_quota(r, nominal, limit) for r, (nominal, limit) in entry.items()
            ],
        }
        for flavor, entry in quota.items()
    ]
    return {
        "apiVersion": KUEUE_API,
        "kind": "ClusterQueue",
        "metadata": {"name": queue_name(project.key), "labels": _labels(project)},
        "spec": {
            "cohortName": COHORT,
            "namespaceSelector": {},
            "queueingStrategy": "BestEffortFIFO",
            "preemption": {
                "withinClusterQueue": "LowerPriority",
                "reclaimWithinCohort": "Any",
                "borrowWithinCohort": {"policy": "Never"},
            },
            # A job that would have to borrow or preempt in a flavor tries the next one first:
            # an offloadable job goes to the remote site (the last flavor) rather than take
            # quota its owner can reclaim, or stop local work; a job that matches one flavor
            # only still borrows or preempts there.
            "flavorFungibility": {
                "whenCanBorrow": "TryNextFlavor",
                "whenCanPreempt": "TryNextFlavor",
            },
            "resourceGroups": [{"coveredResources": list(resources), "flavors": flavors}],
        },
    }


def _resource_quota(resource: str, nominal: Any, limit: int | None) -> dict[str, Any]:
    entry = {"name": resource, "nominalQuota": nominal}
    if limit is not None:
        entry["borrowingLimit"] = limit
    return entry


def make_local_queue(project: Project, namespace: str) -> dict[str, Any]:
    name = queue_name(project.key)
    return {
        "apiVersion": KUEUE_API,
        "kind": "LocalQueue",
        "metadata": {"name": name, "namespace": namespace, "labels": _labels(project)},
        "spec": {"clusterQueue": name},
    }


def make_volume(project: Project, namespace: str, storage: ProjectStorage) -> dict[str, Any]:
    """The project's PersistentVolume, bound ahead to its claim; the folder is the export's
    sub-directory named by the project's slug (made by the first member's spawn)."""
    claim = project_claim(StorageSettings(project_claim_prefix=storage.claim_prefix), project.key)
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": claim,
            "labels": _labels(project, "storage"),
            "annotations": {labels.ROOT_MODE: storage.root_mode},
        },
        "spec": {
            "capacity": {"storage": storage.size},
            "accessModes": ["ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "mountOptions": list(storage.mount_options),
            "nfs": {"server": storage.nfs_server, "path": storage.nfs_path},
            "claimRef": {"namespace": namespace, "name": claim},
        },
    }


def make_claim(project: Project, namespace: str, storage: ProjectStorage) -> dict[str, Any]:
    claim = project_claim(StorageSettings(project_claim_prefix=storage.claim_prefix), project.key)
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim, "namespace": namespace, "labels": _labels(project, "storage")},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "",
            "volumeName": claim,
            "resources": {"requests": {"storage": storage.size}},
        },
    }


def check_settings(namespace: str, storage: ProjectStorage) -> None:
    """Refuse settings that would make invalid objects, naming the setting."""
    if not DNS_LABEL.fullmatch(namespace):
        raise RenderError(f"namespace {namespace!r} is not a DNS label")
    if not DNS_LABEL.fullmatch(storage.claim_prefix) or len(storage.claim_prefix) > 40:
        raise RenderError(f"claim prefix {storage.claim_prefix!r} is not a short DNS label")
    if not QUANTITY_PATTERN.fullmatch(storage.size):
        raise RenderError(f"project size {storage.size!r} is not a quantity such as 10Ti")
    if not storage.nfs_server or not storage.nfs_path.startswith("/"):
        raise RenderError("the NFS server is empty or its path is not absolute")


def project_objects(
    catalog: Catalog,
    flavors: Sequence[Mapping[str, Any]],
    nodes: Iterable[Mapping[str, Any]],
    namespace: str,
    storage: ProjectStorage = ProjectStorage(),
) -> list[list[dict[str, Any]]]:
    """Per catalog project (in catalog order): its PersistentVolume, claim, ClusterQueue and
    LocalQueue."""
    check_settings(namespace, storage)
    projects = list(catalog.projects.values())
    resources = ["cpu", "memory", *_extended(catalog)]
    per_project = quotas(projects, flavor_sizes(catalog, flavors, list(nodes)), resources)
    return [
        [
            make_volume(p, namespace, storage),
            make_claim(p, namespace, storage),
            make_cluster_queue(p, resources, quota),
            make_local_queue(p, namespace),
        ]
        for p, quota in zip(projects, per_project, strict=True)
    ]
