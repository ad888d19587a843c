"""Could this job ever run? Its built pod against Kueue's quotas and the cluster's nodes. Pure.

Kueue admits a Job only when all the pods it runs at once (its parallelism) fit one ResourceFlavor's
quota of its ClusterQueue, counting what that queue may borrow from its cohort; then the scheduler
places each pod only on a node whose allocatable resources hold it. A job beyond either limit, for
every flavor its pod may use, would wait in the queue forever (or be admitted and stay Pending): it
is refused at submission, with the largest request that could run.

Both limits are read from the cluster, as Kueue and the scheduler see them: the ClusterQueues
(nominal quota, borrowing and lending limits, cohort) and ResourceFlavors (node labels, taints)
applied from helm-values/kueue-queues.yaml and projects.yaml, and the nodes' labels, taints and
allocatable resources. A flavor is one a pod may use by Kueue's rule: the pod's node selector and
required node affinity agree with the flavor's labels on the keys the flavor has, and the pod
tolerates the flavor's taints. Cohorts are flat (ClusterQueues sharing `spec.cohortName`); Cohort
objects' own quotas are not counted, so with hierarchical cohorts the limit read here may be too
low."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ... import quantities
from ...errors import UserError

Quantities = Mapping[str, Decimal]

_BINARY = (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10))
SCHEDULING_EFFECTS = ("NoSchedule", "NoExecute")


def quantity(value: Any) -> Decimal:
    """A Kubernetes quantity ("4", "500m", "16Gi", "1e3", 2) as a number; 0 if unreadable."""
    try:
        return quantities.parse(value if type(value) is int else str(value))
    except ValueError:
        return Decimal(0)


@dataclass(frozen=True)
class Flavor:
    """A ResourceFlavor as Kueue matches pods to it."""

    name: str
    node_labels: Mapping[str, str]
    taints: tuple[Mapping[str, Any], ...]
    tolerations: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True)
class Node:
    name: str
    labels: Mapping[str, str]
    taints: tuple[Mapping[str, Any], ...]
    allocatable: Quantities


@dataclass(frozen=True)
class ResourceGroup:
    """Resources Kueue assigns together, and the most of each a ClusterQueue may ever use in each
    of its flavors (in the order Kueue tries them)."""

    resources: frozenset[str]
    flavors: tuple[tuple[str, Quantities], ...]


@dataclass(frozen=True)
class Capacity:
    """What the cluster can ever hold: per LocalQueue (by name) its ClusterQueue's resource
    groups, the flavors, the nodes."""

    queues: Mapping[str, tuple[str, tuple[ResourceGroup, ...]]]
    flavors: Mapping[str, Flavor]
    nodes: tuple[Node, ...]


Quota = tuple[Decimal, "Decimal | None", Decimal]


def _most(quota: Mapping[str, Any]) -> Quota:
    """(nominal, borrowing limit or None for no limit, lendable) of one flavor's resource."""
    nominal = quantity(quota.get("nominalQuota", 0))
    borrowing = quota.get("borrowingLimit")
    lending = quota.get("lendingLimit")
    return (
        nominal,
        None if borrowing is None else quantity(borrowing),
        nominal if lending is None else min(nominal, quantity(lending)),
    )


def _quotas(queue: Mapping[str, Any]) -> dict[tuple[str, str], Quota]:
    quotas = {}
    for group in (queue.get("spec") or {}).get("resourceGroups") or ():
        for flavor in group.get("flavors") or ():
            for resource in flavor.get("resources") or ():
                quotas[(flavor["name"], resource["name"])] = _most(resource)
    return quotas


def most_usable(
    cluster_queues: Iterable[Mapping[str, Any]],
) -> dict[str, dict[tuple[str, str], Decimal]]:
    """Per ClusterQueue, the most of each (flavor, resource) it may ever use at once, as Kueue
    computes it for a flat cohort: its nominal quota plus what it may borrow, which is at most
    its borrowing limit and at most what the other queues of its cohort lend."""
    queues = {q["metadata"]["name"]: q for q in cluster_queues}
    quotas = {name: _quotas(queue) for name, queue in queues.items()}
    cohort_of = {name: (q.get("spec") or {}).get("cohortName") for name, q in queues.items()}
    nothing: Quota = (Decimal(0), None, Decimal(0))
    result: dict[str, dict[tuple[str, str], Decimal]] = {}
    for name, own in quotas.items():
        peers = [
            other
            for other in quotas
            if other != name and cohort_of[name] and cohort_of[other] == cohort_of[name]
        ]
        most = {}
        for key, (nominal, borrowing, _) in own.items():
            lent = sum((quotas[peer].get(key, nothing)[2] for peer in peers), Decimal(0))
            most[key] = nominal + (lent if borrowing is None else min(borrowing, lent))
        result[name] = most
    return result


def _groups(
    queue: Mapping[str, Any], most: Mapping[tuple[str, str], Decimal]
) -> tuple[ResourceGroup, ...]:
    groups = []
    for group in (queue.get("spec") or {}).get("resourceGroups") or ():
        covered = group.get("coveredResources") or ()
        flavors = tuple(
            (f["name"], {r: most[(f["name"], r)] for r in covered if (f["name"], r) in most})
            for f in group.get("flavors") or ()
        )
        groups.append(ResourceGroup(frozenset(covered), flavors))
    return tuple(groups)


def _flavor(obj: Mapping[str, Any]) -> Flavor:
    spec = obj.get("spec") or {}
    return Flavor(
        obj["metadata"]["name"],
        dict(spec.get("nodeLabels") or {}),
        tuple(spec.get("nodeTaints") or ()),
        tuple(spec.get("tolerations") or ()),
    )


def _node(obj: Mapping[str, Any]) -> Node:
    allocatable = (obj.get("status") or {}).get("allocatable") or {}
    return Node(
        obj["metadata"]["name"],
        dict(obj["metadata"].get("labels") or {}),
        tuple((obj.get("spec") or {}).get("taints") or ()),
        {k: quantity(v) for k, v in allocatable.items()},
    )


def capacity(
    local_queues: Iterable[Mapping[str, Any]],
    cluster_queues: Iterable[Mapping[str, Any]],
    flavors: Iterable[Mapping[str, Any]],
    nodes: Iterable[Mapping[str, Any]],
) -> Capacity:
    """The Capacity from the objects as the API server lists them."""
    cluster_queues = list(cluster_queues)
    most = most_usable(cluster_queues)
    groups = {
        q["metadata"]["name"]: _groups(q, most[q["metadata"]["name"]]) for q in cluster_queues
    }
    queues: dict[str, tuple[str, tuple[ResourceGroup, ...]]] = {}
    for local in local_queues:
        target = (local.get("spec") or {}).get("clusterQueue")
        if isinstance(target, str) and target in groups:
            queues[local["metadata"]["name"]] = (target, groups[target])
    return Capacity(
        queues=queues,
        flavors={f["metadata"]["name"]: _flavor(f) for f in flavors},
        nodes=tuple(_node(n) for n in nodes),
    )


# -- a pod against labels, taints and resources ---------------------------------------------------


def pod_requests(pod_spec: Mapping[str, Any]) -> dict[str, Decimal]:
    """What the scheduler and Kueue count for one pod: its containers (and sidecars) together,
    or its largest init container, whichever is more, per resource."""

    def requests(container: Mapping[str, Any]) -> dict[str, Decimal]:
        resources = container.get("resources") or {}
        asked = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        return {k: quantity(v) for k, v in asked.items()}

    init = pod_spec.get("initContainers") or ()
    sidecars = [c for c in init if c.get("restartPolicy") == "Always"]
    total: dict[str, Decimal] = {}
    for container in [*(pod_spec.get("containers") or ()), *sidecars]:
        for resource, amount in requests(container).items():
            total[resource] = total.get(resource, Decimal(0)) + amount
    for container in init:
        if container.get("restartPolicy") != "Always":
            for resource, amount in requests(container).items():
                total[resource] = max(total.get(resource, Decimal(0)), amount)
    return {k: v for k, v in total.items() if v > 0}


def _tolerated(taint: Mapping[str, Any], tolerations: Iterable[Mapping[str, Any]]) -> bool:
    if taint.get("effect") not in SCHEDULING_EFFECTS:
        return True
    for toleration in tolerations:
        key, operator = toleration.get("key", ""), toleration.get("operator", "Equal")
        same_key = key == taint.get("key") or (not key and operator == "Exists")
        same_value = operator == "Exists" or toleration.get("value", "") == taint.get("value", "")
        if same_key and same_value and toleration.get("effect", "") in ("", taint.get("effect")):
            return True
    return False


def _expression(expression: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, operator = expression["key"], expression["operator"]
    values: Sequence[str] = expression.get("values") or ()
    if operator == "In":
        return labels.get(key) in values
    if operator == "NotIn":
        return labels.get(key) not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    if (
        operator in ("Gt", "Lt")
        and labels.get(key, "").isdigit()
        and values[:1]
        and values[0].isdigit()
    ):
        have, bound = int(labels[key]), int(values[0])
        return have > bound if operator == "Gt" else have < bound
    return False


def _selects(
    pod_spec: Mapping[str, Any], labels: Mapping[str, str], keys: Iterable[str] | None = None
) -> bool:
    """Whether the pod's node selector and required node affinity accept these labels; with
    `keys`, only terms on those keys count (Kueue's rule for a flavor's labels)."""
    counted = None if keys is None else set(keys)

    def counts(key: str) -> bool:
        return counted is None or key in counted

    selector = pod_spec.get("nodeSelector") or {}
    if any(counts(k) and labels.get(k) != v for k, v in selector.items()):
        return False
    required = ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms") or ()
    return not terms or any(
        all(_expression(e, labels) for e in term.get("matchExpressions") or () if counts(e["key"]))
        for term in terms
    )


def flavor_fits(pod_spec: Mapping[str, Any], flavor: Flavor) -> bool:
    tolerations = [*(pod_spec.get("tolerations") or ()), *flavor.tolerations]
    return all(_tolerated(t, tolerations) for t in flavor.taints) and _selects(
        pod_spec, flavor.node_labels, flavor.node_labels
    )


def node_fits(pod_spec: Mapping[str, Any], flavor: Flavor, node: Node) -> bool:
    """The node accepts the pod as Kueue sends it (with the flavor's labels and tolerations)."""
    tolerations = [*(pod_spec.get("tolerations") or ()), *flavor.tolerations]
    return (
        flavor.node_labels.items() <= node.labels.items()
        and _selects(pod_spec, node.labels)
        and all(_tolerated(t, tolerations) for t in node.taints)
    )


# -- the check ---------------------------------------------------------------------------------


def _amount(resource: str, amount: Decimal, names: Mapping[str, str]) -> str:
    if resource == "cpu":
        return f"{amount.normalize():f} CPU{'s' if amount != 1 else ''}"
    if resource == "memory":
        for suffix, factor in _BINARY:
            if amount >= factor:
                value = (amount / factor).quantize(Decimal("0.1")).normalize()
                return f"{value:f}{suffix} memory"
        return f"{amount.normalize():f} bytes of memory"
    return f"{amount.normalize():f} × {names.get(resource, resource)}"


def _listing(amounts: Mapping[str, Decimal], names: Mapping[str, str]) -> str:
    order = sorted(amounts, key=lambda r: (r != "cpu", r != "memory", r))
    parts = [_amount(r, amounts[r], names) for r in order]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _largest(rows: Iterable[Quantities], resources: Iterable[str]) -> dict[str, Decimal]:
    rows = list(rows)
    return {r: max((row.get(r, Decimal(0)) for row in rows), default=Decimal(0)) for r in resources}


def _group_refusal(
    capacity: Capacity,
    group: ResourceGroup,
    pod_spec: Mapping[str, Any],
    one: Quantities,
    pods_at_once: int,
    names: Mapping[str, str],
) -> str | None:
    """None if a flavor of this resource group holds the job; else why not, with the most it
    could have."""
    wanted = {r: a for r, a in one.items() if r in group.resources}
    if not wanted:
        return None
    over_nodes: list[Quantities] = []
    over_quota: list[Quantities] = []
    for name, most in group.flavors:
        flavor = capacity.flavors.get(name)
        if (
            flavor is None
            or not all(most.get(r) for r in wanted)
            or not flavor_fits(pod_spec, flavor)
        ):
            continue
        nodes = [n.allocatable for n in capacity.nodes if node_fits(pod_spec, flavor, n)]
        if not any(all(node.get(r, Decimal(0)) >= a for r, a in one.items()) for node in nodes):
            over_nodes.extend(nodes)
        elif any(a * pods_at_once > most[r] for r, a in wanted.items()):
            over_quota.append(most)
        else:
            return None
    shown = sorted({"cpu", "memory", *one})
    if over_quota:
        largest = _largest(over_quota, [r for r in shown if r in group.resources])
        asked = {r: a * pods_at_once for r, a in wanted.items()}
        return (
            f"its {pods_at_once} pods at once need {_listing(asked, names)}, and its "
            f"project's queue can hold at most {_listing(largest, names)} of this kind at once "
            "(borrowing included); ask for less, or fewer pods at once (parallelism)"
        )
    if over_nodes:
        largest = _largest(over_nodes, shown)
        return (
            f"one pod asks for {_listing(one, names)}, and the nodes that can run it have at "
            f"most {_listing(largest, names)} (not necessarily on one node)"
        )
    return "no hardware of its project's queue matches it"


def check(
    capacity: Capacity,
    queue: str,
    pod_spec: Mapping[str, Any],
    pods_at_once: int,
    names: Mapping[str, str],
) -> None:
    """Nothing if some flavor of the job's queue can hold all its pods at once and some node of
    that flavor one pod; else a UserError (400) that says the largest request that could run.
    `names` gives resources their display names (nvidia.com/gpu -> NVIDIA A30)."""
    if queue not in capacity.queues:
        raise UserError(
            f"the job's queue {queue} does not exist in the cluster; ask your admins",
            reason="no-queue",
            status=409,
            log_detail=f"LocalQueue {queue} or its ClusterQueue is missing",
        )
    cluster_queue, groups = capacity.queues[queue]
    one = pod_requests(pod_spec)
    uncovered = sorted(set(one).difference(*(g.resources for g in groups)))
    if uncovered:
        raise UserError(
            "this job can never run: its queue offers no "
            + ", ".join(names.get(r, r) for r in uncovered),
            reason="capacity",
            log_detail=f"{cluster_queue} covers none of {uncovered}",
        )
    for group in groups:
        why = _group_refusal(capacity, group, pod_spec, one, pods_at_once, names)
        if why is not None:
            raise UserError(
                f"this job can never run: {why}",
                reason="capacity",
                log_detail=f"{cluster_queue} cannot hold {pods_at_once} x {one}: {why}",
            )
