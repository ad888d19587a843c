"""One render of the spawn form, ours (from the inventory) and the baseline's (two lists per
render), and the count of Kubernetes calls made while rendering."""

from __future__ import annotations

import contextvars
import statistics
import time
from collections.abc import Iterable
from typing import Any

from kubernetes_asyncio import client

from aiinfn_hub import form, profiles, reservations
from aiinfn_hub.catalog import Catalog
from aiinfn_hub.inventory import Counts, Inventory
from aiinfn_hub.inventory_records import RESERVATION_TAINT, TERMINAL_PHASES, units
from aiinfn_hub.labels import (
    INTERLINK_TAINT_PREFIX,
    JOB_NAME,
    KUEUE_QUEUE,
    LEGACY_JOB_NAME,
    VIRTUAL_KUBELET_TAINT,
    VIRTUAL_NODE,
    VIRTUAL_NODE_VALUE,
)
from aiinfn_hub.policy import UserPolicy, for_user, parse_rules
from aiinfn_hub.profiles import Availability

from .settings import ALLOW_ALL, USER_GROUPS

IN_RENDER: contextvars.ContextVar[bool] = contextvars.ContextVar("in_render", default=False)


class CallCounter:
    """Counts ApiClient.call_api and rest_client.request on one client (benchmark only).

    `render_*` counts only calls made while IN_RENDER is set in the caller's context: the
    watcher's tasks were started outside it, so their reconnects never count as render calls."""

    def __init__(self, api: client.ApiClient) -> None:
        self.calls = self.requests = self.render_calls = self.render_requests = 0
        call_api, request = api.call_api, api.rest_client.request

        def counted_call_api(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            self.render_calls += IN_RENDER.get()
            return call_api(*args, **kwargs)

        async def counted_request(*args: Any, **kwargs: Any) -> Any:
            self.requests += 1
            self.render_requests += IN_RENDER.get()
            return await request(*args, **kwargs)

        api.call_api = counted_call_api
        api.rest_client.request = counted_request

    def state(self) -> tuple[int, int, int, int]:
        return self.calls, self.requests, self.render_calls, self.render_requests


class FormPath:
    """What AiInfnSpawner does per render once it has raw availability (shared by both sides)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.default_rules = parse_rules(ALLOW_ALL, catalog, "default_policy")
        self.promises = reservations.Reservations()

    def policy(self) -> UserPolicy:
        return for_user(self.default_rules, {}, USER_GROUPS)

    def render(
        self, policy: UserPolicy, counts: dict[str, Counts]
    ) -> tuple[str, dict[str, Availability]]:
        raw = {key: Availability.of(c) for key, c in counts.items()}
        availability = reservations.available(raw, self.promises)
        try:
            selected = profiles.resolve(self.catalog, policy, {}, 0).as_options()
        except Exception:  # noqa: BLE001 - the spawner falls back to no selection
            selected = {}
        built = profiles.build(self.catalog, availability, policy, 0, selected)
        return form.render(built), availability


def render_ours(path: FormPath, inventory: Inventory) -> tuple[str, dict[str, Availability]]:
    policy = path.policy()
    return path.render(policy, inventory.snapshot(policy.groups))


def stage_breakdown(path: FormPath, inventory: Inventory, iterations: int) -> dict[str, float]:
    """Median ms of each step of one render of ours, timed separately."""
    steps: dict[str, list[float]] = {
        "snapshot+availability": [],
        "resolve saved options": [],
        "profiles.build": [],
        "form.render": [],
    }
    clock = time.perf_counter_ns
    for _ in range(iterations):
        t0 = clock()
        policy = path.policy()
        counts = inventory.snapshot(policy.groups)
        raw = {key: Availability.of(c) for key, c in counts.items()}
        availability = reservations.available(raw, path.promises)
        t1 = clock()
        selected = profiles.resolve(path.catalog, policy, {}, 0).as_options()
        t2 = clock()
        built = profiles.build(path.catalog, availability, policy, 0, selected)
        t3 = clock()
        form.render(built)
        t4 = clock()
        for name, start, end in zip(steps, (t0, t1, t2, t3), (t1, t2, t3, t4), strict=True):
            steps[name].append((end - start) / 1e6)
    return {name: statistics.median(samples) for name, samples in steps.items()}


# ---- the baseline: count from deserialised lists, per render ---------------------------------


def accelerators_by_resource(catalog: Catalog) -> dict[str, list]:
    """The catalog's accelerators per extended resource, most specific node labels first."""
    by_resource: dict[str, list] = {}
    for accelerator in catalog.accelerators.values():
        if accelerator.kind != "cpu" and accelerator.resource:
            by_resource.setdefault(accelerator.resource, []).append(accelerator)
    for candidates in by_resource.values():
        candidates.sort(key=lambda a: -len(a.node_labels))
    return by_resource


def node_offers(
    node_list: Any, by_resource: dict[str, list], groups: Iterable[str]
) -> dict[str, dict[str, tuple[str, int]]]:
    """Per usable node, {resource: (accelerator key, units)}: Ready, uncordoned, non-virtual
    nodes, reserved for nobody or for one of the groups."""
    visible = {None, *groups}
    offers: dict[str, dict[str, tuple[str, int]]] = {}
    for node in node_list.items:
        labels = node.metadata.labels or {}
        taints = (node.spec.taints if node.spec else None) or []
        virtual = labels.get(VIRTUAL_NODE) == VIRTUAL_NODE_VALUE or any(
            t.key == VIRTUAL_KUBELET_TAINT or t.key.startswith(INTERLINK_TAINT_PREFIX)
            for t in taints
        )
        reserved = next(((t.value or "") for t in taints if t.key == RESERVATION_TAINT), None)
        conditions = node.status.conditions or []
        ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
        if virtual or not ready or node.spec.unschedulable or reserved not in visible:
            continue
        allocatable = node.status.allocatable or {}
        mine = {}
        for resource, candidates in by_resource.items():
            count = units(allocatable.get(resource))
            if count:
                for accelerator in candidates:
                    if accelerator.offered_by(labels):
                        mine[resource] = (accelerator.key, count)
                        break
        offers[node.metadata.name] = mine
    return offers


def pod_usage(
    pod_list: Any, offers: dict[str, dict[str, tuple[str, int]]]
) -> tuple[dict[tuple[str, str], list[int]], dict[str, set[str]]]:
    """Units in use per (node, accelerator key), [notebooks, batch]: bound, unfinished pods;
    limits else requests; batch = Kueue label or owned by a Job. And per accelerator key, the
    batch jobs holding units (job-name label, else the pod)."""
    used: dict[tuple[str, str], list[int]] = {}
    jobs: dict[str, set[str]] = {}
    for pod in pod_list.items:
        node = pod.spec.node_name
        if not node or node not in offers or (pod.status and pod.status.phase in TERMINAL_PHASES):
            continue
        labels = pod.metadata.labels or {}
        owners = pod.metadata.owner_references or []
        batch = KUEUE_QUEUE in labels or any(o.kind == "Job" for o in owners)
        job = labels.get(JOB_NAME) or labels.get(LEGACY_JOB_NAME)
        job = f"{pod.metadata.namespace}/{'job/' + job if job else 'pod/' + pod.metadata.name}"
        for container in pod.spec.containers:
            limits = (container.resources.limits if container.resources else None) or {}
            requests = (container.resources.requests if container.resources else None) or {}
            for resource, (key, _) in offers[node].items():
                count = units(limits.get(resource, requests.get(resource)))
                if count:
                    used.setdefault((node, key), [0, 0])[batch] += count
                    if batch:
                        jobs.setdefault(key, set()).add(job)
    return used, jobs


def reference_counts(
    catalog: Catalog, node_list: Any, pod_list: Any, groups: Iterable[str]
) -> dict[str, Counts]:
    """Accelerator usage counted from deserialised V1NodeList / V1PodList, same rules as the
    inventory."""
    by_resource = accelerators_by_resource(catalog)
    offers = node_offers(node_list, by_resource, groups)
    used, jobs = pod_usage(pod_list, offers)
    sums = {
        key: [0, 0, 0, 0, 0]
        for candidates in by_resource.values()
        for key in (a.key for a in candidates)
    }
    for name, mine in offers.items():
        for key, capacity in mine.values():
            notebooks, batch = used.get((name, key), (0, 0))
            if_preempted = max(0, capacity - notebooks)
            row = sums[key]
            values = (capacity, notebooks, batch, max(0, if_preempted - batch), if_preempted)
            for i, value in enumerate(values):
                row[i] += value
    return {key: Counts(*row, len(jobs.get(key, ()))) for key, row in sums.items()}


async def render_baseline(
    path: FormPath, core: client.CoreV1Api
) -> tuple[str, dict[str, Availability]]:
    policy = path.policy()
    node_list = await core.list_node()
    pod_list = await core.list_pod_for_all_namespaces()
    return path.render(policy, reference_counts(path.catalog, node_list, pod_list, policy.groups))
