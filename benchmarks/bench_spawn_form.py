"""Spawn-form benchmark: watch-fed inventory vs. listing the cluster on every render.

Side by side, in one run, against the same real kube-apiserver (our own dev cluster, named
"bench", on a free port; the tests' "aiinfn-dev" cluster is never touched):

- ours: `InventoryWatcher` keeps an `Inventory` current; one render is what the spawner does per
  page view: `inventory.snapshot(groups)` -> availability -> `profiles.build` -> `form.render`.
  Every Kubernetes request of the process is counted, and those made from the render path are
  reported (they must be 0).
- baseline (the AI_INFN reference spawner approach): per render, `list_node()` and
  `list_pod_for_all_namespaces()` through kubernetes_asyncio (deserialised into models, as a
  normal client does), count accelerator usage from them, then the same build and render.

At two scales: the AI_INFN farm (topology `ai-infn`, ~200 pods) and a large farm
(`synthetic-1000`, 20,000 pods). Pods are created bound (`spec.nodeName`, no scheduler),
restricted-compliant, concurrently; kwok marks them Running. Also measured: the inventory's
memory (tracemalloc) and the cost of one watch event (apply only, and JSON parse + apply).

Run: .venv/bin/python benchmarks/bench_spawn_form.py [--quick] [--scale small|large|both] [--json FILE]
Performance is reported as numbers and ratios against the baseline; nothing here is a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import gc
import json
import math
import os
import platform as platform_module
import random
import resource as rusage
import signal
import statistics
import sys
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiinfn_hub import catalog as catalog_module  # noqa: E402
from aiinfn_hub import form, k8s, profiles, reservations  # noqa: E402
from aiinfn_hub.catalog import Catalog  # noqa: E402
from aiinfn_dev.devcluster import processes, topology  # noqa: E402
from aiinfn_dev.devcluster.cluster import DevCluster  # noqa: E402
from aiinfn_hub.inventory import (  # noqa: E402
    QUEUE_LABEL, RESERVATION_TAINT, TERMINAL_PHASES, VIRTUAL_NODE_LABEL, VIRTUAL_TAINT,
    VIRTUAL_TAINT_PREFIX, Counts, Inventory, units,
)
from aiinfn_hub.inventory_watch import POD_FIELD_SELECTOR, InventoryWatcher, parse_event  # noqa: E402
from aiinfn_hub.policy import UserPolicy, for_user, parse_rules  # noqa: E402
from aiinfn_hub.profiles import Availability  # noqa: E402

CLUSTER_NAME = "bench"
CONCURRENCY = 32
PAGE_SIZE = 500  # as InventoryWatcher
NOTEBOOK_NAMESPACES = ("bench-notebooks-0", "bench-notebooks-1")
BATCH_NAMESPACES = ("bench-batch-0", "bench-batch-1")
BENCH_LABEL = "aiinfn.infn.it/bench"
IMAGES = {
    "gpu": "harbor.cloud.infn.it/ai-infn/ml-gpu:2025.10",
    "mig": "harbor.cloud.infn.it/ai-infn/ml-gpu:2025.10",
    "fpga": "harbor.cloud.infn.it/ai-infn/fpga:2025.10",
    "cpu": "harbor.cloud.infn.it/ai-infn/cpu:2025.10",
}
# Everything allowed, so no profile is disabled by policy and every card shows live counts.
ALLOW_ALL = {"accelerators": "*", "environments": "*", "custom_images": True, "max_accelerators": 16}
USER_GROUPS = ("ai-infn-users",)

# Targets from the issue.
TARGET_RENDER_P95_MS = 5.0
TARGET_SPEEDUP = 100.0
TARGET_MEMORY_MB = 50.0
TARGET_EVENT_US = 50.0


@dataclass(frozen=True)
class Scale:
    key: str
    title: str
    topology: str
    pods: int
    renders: int
    baseline_renders: int


FULL = (
    Scale("small", "AI_INFN scale", "ai-infn", 200, 2000, 50),
    Scale("large", "large", "synthetic-1000", 20000, 500, 10),
)
QUICK = (
    Scale("small", "AI_INFN scale", "ai-infn", 200, 500, 20),
    Scale("large", "large (quick)", "synthetic-1000", 5000, 200, 5),
)


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def percentile(samples: list[float], p: float) -> float:
    """Nearest-rank percentile of samples (any order)."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


# ---- counting Kubernetes calls ---------------------------------------------------------------

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


# ---- the pods to create ----------------------------------------------------------------------

def restricted_pod(name: str, namespace: str, node: str, kind: str, resource: str | None,
                   count: int, batch: bool) -> dict[str, Any]:
    """A bound pod that passes Pod Security "restricted"."""
    resources: dict[str, Any] = {"requests": {"cpu": "100m", "memory": "256Mi"},
                                 "limits": {"cpu": "1", "memory": "1Gi"}}
    if resource:
        resources["requests"][resource] = str(count)
        resources["limits"][resource] = str(count)
    labels = {"app.kubernetes.io/name": "bench-batch" if batch else "bench-notebook",
              "app.kubernetes.io/part-of": "aiinfn-hub-bench", BENCH_LABEL: "true"}
    if batch:
        labels[QUEUE_LABEL] = "x"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "nodeName": node,
            "automountServiceAccountToken": False,
            "restartPolicy": "Never" if batch else "Always",
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "main",
                "image": IMAGES[kind],
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                    "runAsNonRoot": True, "runAsUser": 1000,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "resources": resources,
            }],
        },
    }


def plan_pods(topology_name: str, catalog: Catalog, total: int, seed: int = 7) -> list[dict[str, Any]]:
    """`total` bound pods over the topology's schedulable nodes, within every node's capacity:
    accelerator pods fill each node's units to 0-100% (so some nodes are full, some free), at
    most 40% of all pods; the rest ask for CPU only. About a third are batch (Kueue label)."""
    rng = random.Random(seed)
    kinds = {a.resource: a.kind for a in catalog.accelerators.values() if a.resource}
    nodes = []
    for manifest in topology.node_manifests(topology_name):
        labels = manifest["metadata"]["labels"]
        if manifest["spec"]["taints"] or labels.get(VIRTUAL_NODE_LABEL[0]) == VIRTUAL_NODE_LABEL[1]:
            continue  # the interLink virtual node and anything tainted
        allocatable = manifest["status"]["allocatable"]
        offers = {r: int(v) for r, v in allocatable.items() if r in kinds}
        nodes.append((manifest["metadata"]["name"], offers, int(allocatable["pods"])))
    specs: list[tuple[str, str | None, int, bool, str]] = []  # (kind, resource, count, batch, node)
    slots = {name: pods for name, _, pods in nodes}
    budget = int(total * 0.4)
    for name, offers, _ in nodes:
        for resource, capacity in offers.items():
            left = int(capacity * rng.choice((0.0, 0.5, 0.75, 1.0)))
            while left > 0 and budget > 0 and slots[name] > 0:
                count = 2 if kinds[resource] == "gpu" and left >= 2 and rng.random() < 0.25 else 1
                specs.append((kinds[resource], resource, count, rng.random() < 0.35, name))
                left -= count
                budget -= 1
                slots[name] -= 1
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
        pods.append(restricted_pod(f"{'job' if batch else 'nb'}-{i:05d}", namespaces[i % 2], node,
                                   kind, resource, count, batch))
    return pods


# ---- populating the cluster ------------------------------------------------------------------

async def make_namespaces(core: client.CoreV1Api) -> None:
    for namespace in NOTEBOOK_NAMESPACES + BATCH_NAMESPACES:
        try:
            await core.create_namespace({"metadata": {"name": namespace, "labels": {
                BENCH_LABEL: "true", "pod-security.kubernetes.io/enforce": "restricted"}}})
        except ApiException as error:
            if error.status != 409:
                raise
    deadline = time.monotonic() + 120
    for namespace in NOTEBOOK_NAMESPACES + BATCH_NAMESPACES:
        while True:  # pods are refused until the controller-manager made the default account
            accounts = await core.list_namespaced_service_account(namespace)
            if any(a.metadata.name == "default" for a in accounts.items):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"no default ServiceAccount in {namespace} after 120 s")
            await asyncio.sleep(0.2)


async def create_pods(core: client.CoreV1Api, pods: list[dict[str, Any]]) -> float:
    """Create every pod with CONCURRENCY requests in flight; retry 429/5xx; return seconds."""
    queue = iter(pods)
    done = 0
    started = time.monotonic()

    async def create(pod: dict[str, Any]) -> None:
        for attempt in range(8):
            try:
                response = await core.create_namespaced_pod(pod["metadata"]["namespace"], pod,
                                                            _preload_content=False)
            except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                status, body = None, str(error)
            else:
                try:
                    status, body = response.status, (await response.read())[:300]
                finally:
                    response.release()
                if status in (201, 409):  # 409: left from an interrupted attempt
                    return
                if status not in (429, 500, 503, 504):
                    raise SystemExit(f"creating pod {pod['metadata']['name']} failed ({status}): {body!r}")
            await asyncio.sleep(min(5.0, 0.2 * 2 ** attempt))
        raise SystemExit(f"creating pod {pod['metadata']['name']} kept failing: {status} {body!r}")

    async def worker() -> None:
        nonlocal done
        for pod in queue:  # one shared iterator: each pod is taken by exactly one worker
            await create(pod)
            done += 1
            if done % 2500 == 0:
                say(f"  created {done}/{len(pods)} pods ({done / (time.monotonic() - started):.0f}/s)")

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return time.monotonic() - started


async def wait_running(core: client.CoreV1Api, limit: float) -> tuple[float, bool]:
    """Wait until no bench pod is anything but Running (kwok plays them); (seconds, all running)."""
    started = time.monotonic()
    while True:
        response = await core.list_pod_for_all_namespaces(
            label_selector=BENCH_LABEL, field_selector="status.phase!=Running", limit=1,
            _preload_content=False)
        try:
            body = json.loads(await response.read())
        finally:
            response.release()
        if not body.get("items"):
            return time.monotonic() - started, True
        if time.monotonic() - started > limit:
            return time.monotonic() - started, False
        await asyncio.sleep(2.0)


async def raw_pages(lister: Callable[..., Any], field_selector: str | None) -> list[bytes]:
    """The list responses as the watcher reads them (pages of PAGE_SIZE, raw JSON bytes)."""
    pages, token = [], None
    while True:
        response = await lister(limit=PAGE_SIZE, _continue=token, field_selector=field_selector,
                                _preload_content=False)
        try:
            data = await response.read()
        finally:
            response.release()
        pages.append(data)
        token = (json.loads(data).get("metadata") or {}).get("continue")
        if not token:
            return pages


# ---- one render: ours and the baseline ---------------------------------------------------------

class FormPath:
    """What AiInfnSpawner does per render once it has raw availability (shared by both sides)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.default_rules = parse_rules(ALLOW_ALL, catalog, "default_policy")
        self.promises = reservations.Reservations()

    def policy(self) -> UserPolicy:
        return for_user(self.default_rules, {}, USER_GROUPS)

    def render(self, policy: UserPolicy, counts: dict[str, Counts]) -> tuple[str, dict[str, Availability]]:
        raw = {key: Availability(free=c.free_if_preempted, total=c.total, batch=c.batch)
               for key, c in counts.items()}
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
    steps: dict[str, list[float]] = {"snapshot+availability": [], "resolve saved options": [],
                                     "profiles.build": [], "form.render": []}
    clock = time.perf_counter_ns
    for _ in range(iterations):
        t0 = clock()
        policy = path.policy()
        counts = inventory.snapshot(policy.groups)
        raw = {key: Availability(free=c.free_if_preempted, total=c.total, batch=c.batch)
               for key, c in counts.items()}
        availability = reservations.available(raw, path.promises)
        t1 = clock()
        selected = profiles.resolve(path.catalog, policy, {}, 0).as_options()
        t2 = clock()
        built = profiles.build(path.catalog, availability, policy, 0, selected)
        t3 = clock()
        form.render(built)
        t4 = clock()
        for name, start, end in zip(steps, (t0, t1, t2, t3), (t1, t2, t3, t4)):
            steps[name].append((end - start) / 1e6)
    return {name: statistics.median(samples) for name, samples in steps.items()}


def reference_counts(catalog: Catalog, node_list: Any, pod_list: Any, groups: Iterable[str]) -> dict[str, Counts]:
    """Accelerator usage counted from deserialised V1NodeList / V1PodList, same rules as the
    inventory: Ready, uncordoned, non-virtual nodes visible to the groups; bound, unfinished
    pods; limits else requests; batch = Kueue label or owned by a Job."""
    visible = {None, *groups}
    by_resource: dict[str, list] = {}
    for accelerator in catalog.accelerators.values():
        if accelerator.kind != "cpu" and accelerator.resource:
            by_resource.setdefault(accelerator.resource, []).append(accelerator)
    for candidates in by_resource.values():
        candidates.sort(key=lambda a: -len(a.node_labels))
    offers: dict[str, dict[str, tuple[str, int]]] = {}
    for node in node_list.items:
        labels = node.metadata.labels or {}
        taints = (node.spec.taints if node.spec else None) or []
        virtual = labels.get(VIRTUAL_NODE_LABEL[0]) == VIRTUAL_NODE_LABEL[1] or any(
            t.key == VIRTUAL_TAINT or t.key.startswith(VIRTUAL_TAINT_PREFIX) for t in taints)
        reserved = next(((t.value or "") for t in taints if t.key == RESERVATION_TAINT), None)
        ready = any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))
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
    used: dict[tuple[str, str], list[int]] = {}
    for pod in pod_list.items:
        node = pod.spec.node_name
        if not node or node not in offers or (pod.status and pod.status.phase in TERMINAL_PHASES):
            continue
        labels = pod.metadata.labels or {}
        batch = QUEUE_LABEL in labels or any(o.kind == "Job" for o in (pod.metadata.owner_references or []))
        for container in pod.spec.containers:
            limits = (container.resources.limits if container.resources else None) or {}
            requests = (container.resources.requests if container.resources else None) or {}
            for resource, (key, _) in offers[node].items():
                count = units(limits.get(resource, requests.get(resource)))
                if count:
                    used.setdefault((node, key), [0, 0])[batch] += count
    sums = {key: [0, 0, 0, 0, 0] for candidates in by_resource.values() for key in (a.key for a in candidates)}
    for name, mine in offers.items():
        for key, capacity in mine.values():
            notebooks, batch = used.get((name, key), (0, 0))
            if_preempted = max(0, capacity - notebooks)
            row = sums[key]
            for i, value in enumerate((capacity, notebooks, batch, max(0, if_preempted - batch), if_preempted)):
                row[i] += value
    return {key: Counts(*row) for key, row in sums.items()}


async def render_baseline(path: FormPath, core: client.CoreV1Api) -> tuple[str, dict[str, Availability]]:
    policy = path.policy()
    node_list = await core.list_node()
    pod_list = await core.list_pod_for_all_namespaces()
    return path.render(policy, reference_counts(path.catalog, node_list, pod_list, policy.groups))


# ---- the measurements ------------------------------------------------------------------------

def time_events(fn: Callable[[], int], repeats: int = 5, at_least: int = 20000) -> float:
    """Median over `repeats` of (seconds / event) for fn(), which returns how many events it
    applied; each repeat calls fn() until it applied `at_least` events."""
    per_event = []
    for _ in range(repeats):
        events = 0
        started = time.perf_counter()
        while events < at_least:
            events += fn()
        per_event.append((time.perf_counter() - started) / events)
    return statistics.median(per_event)


def offline_measurements(catalog: Catalog, node_pages: list[bytes], pod_pages: list[bytes],
                         renders: int) -> dict[str, Any]:
    """Inventory memory (tracemalloc, fed page by page as the watcher's relist does), renders of
    ours with no cluster running, and the cost of one watch event, over the real pod objects
    the API server returned."""
    result: dict[str, Any] = {}
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    inventory = Inventory(catalog.accelerators)
    nodes: dict[str, Any] = {}
    for page in node_pages:
        nodes.update(inventory.slim_nodes(json.loads(page)["items"]))
    inventory.replace(nodes=nodes)
    pods: dict[str, Any] = {}
    for page in pod_pages:
        pods.update(inventory.slim_pods(json.loads(page)["items"]))
    inventory.replace(pods=pods)
    del nodes, pods, page
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    result["memory_mb"] = (current - before) / 2**20
    result["memory_peak_mb"] = (peak - before) / 2**20
    result["inventory_nodes"] = inventory.node_count
    result["inventory_pods"] = inventory.pod_count

    path = FormPath(catalog)
    for _ in range(20):
        render_ours(path, inventory)
    gc.collect()
    samples = []
    for _ in range(renders):
        t0 = time.perf_counter_ns()
        render_ours(path, inventory)
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    result["quiet_ours_ms"] = samples

    objects = [obj for page in pod_pages for obj in json.loads(page)["items"]]
    result["events"] = len(objects)
    lines = [json.dumps({"type": "MODIFIED", "object": obj}, separators=(",", ":")).encode() for obj in objects]
    result["event_bytes"] = statistics.mean(len(line) for line in lines)

    def unchanged() -> int:  # the common case: a status update that moves no unit
        for obj in objects:
            inventory.apply_pod("MODIFIED", obj)
        return len(objects)

    def churn() -> int:  # every pod leaves and comes back: every count moves
        for obj in objects:
            inventory.apply_pod("DELETED", obj)
            inventory.apply_pod("ADDED", obj)
        return 2 * len(objects)

    def end_to_end() -> int:  # what the watcher does per line: json parse, then apply
        for line in lines:
            event_type, obj = parse_event(line)
            inventory.apply_pod(event_type, obj)
        return len(lines)

    result["event_us_unchanged"] = time_events(unchanged) * 1e6
    result["event_us_churn"] = time_events(churn) * 1e6
    result["event_us_end_to_end"] = time_events(end_to_end) * 1e6
    result["counts_match_recount"] = inventory.snapshot(USER_GROUPS) == inventory.recount(USER_GROUPS)
    return result


async def measure_scale(scale: Scale, catalog: Catalog) -> dict[str, Any]:
    result: dict[str, Any] = {"scale": scale.key, "title": scale.title, "topology": scale.topology,
                              "pods": scale.pods}
    port = processes.free_port()
    cluster = DevCluster(name=CLUSTER_NAME, port=port, topology_name=scale.topology,
                         log=lambda line: say(f"  devcluster: {line}"))
    if cluster.status().state != "stopped":
        say(f"cluster {CLUSTER_NAME!r} left from an earlier run: stopping it")
        cluster.down()
    catalog_kinds = {a.resource: a.kind for a in catalog.accelerators.values() if a.resource}
    node_pages: list[bytes] = []
    pod_pages: list[bytes] = []
    started = time.monotonic()
    try:
        cluster.up(timeout=600)
        result["cluster_up_s"] = time.monotonic() - started
        say(f"{scale.title}: cluster up on 127.0.0.1:{port} in {result['cluster_up_s']:.0f} s")
        api = await k8s.api_client(str(cluster.layout.admin_kubeconfig))
        async with api:
            counter = CallCounter(api)
            core = client.CoreV1Api(api)
            pods = plan_pods(scale.topology, catalog, scale.pods)
            mix: dict[str, int] = {}
            for pod in pods:
                limits = pod["spec"]["containers"][0]["resources"]["limits"]
                kind = next((catalog_kinds[r] for r in limits if r in catalog_kinds), "cpu")
                role = "batch" if QUEUE_LABEL in pod["metadata"]["labels"] else "notebook"
                mix[f"{kind} {role}"] = mix.get(f"{kind} {role}", 0) + 1
            result["mix"] = dict(sorted(mix.items()))
            result["accelerator_pods"] = sum(n for k, n in mix.items() if not k.startswith("cpu "))
            await make_namespaces(core)
            result["create_s"] = await create_pods(core, pods)
            say(f"{scale.title}: created {len(pods)} pods in {result['create_s']:.1f} s "
                f"({len(pods) / result['create_s']:.0f}/s), {result['accelerator_pods']} with accelerators")
            del pods
            running_s, all_running = await wait_running(core, limit=300)
            result["running_wait_s"], result["all_running"] = running_s, all_running
            say(f"{scale.title}: {'all' if all_running else 'NOT all'} pods Running after {running_s:.0f} s more")

            # -- ours: the watcher, then renders from memory
            inventory = Inventory(catalog.accelerators)
            watcher = InventoryWatcher(api, inventory)
            before = counter.state()
            sync_started = time.monotonic()
            await watcher.start()
            while inventory.pod_count != result["accelerator_pods"]:
                if time.monotonic() - sync_started > 120:
                    raise SystemExit(f"inventory holds {inventory.pod_count} pods, expected "
                                     f"{result['accelerator_pods']}")
                await asyncio.sleep(0.1)
            result["watch_sync_s"] = time.monotonic() - sync_started
            result["watch_sync_requests"] = counter.state()[1] - before[1]
            say(f"{scale.title}: watcher synced in {result['watch_sync_s']:.1f} s "
                f"({result['watch_sync_requests']} requests); {inventory.node_count} nodes, "
                f"{inventory.pod_count} accelerator pods held")
            path = FormPath(catalog)
            try:
                token = IN_RENDER.set(True)
                try:
                    for _ in range(20):
                        render_ours(path, inventory)  # warm-up
                    gc.collect()
                    result["load_before_renders"] = os.getloadavg()[0]
                    before = counter.state()
                    samples, cpu = [], []
                    for i in range(scale.renders):
                        t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
                        render_ours(path, inventory)
                        c1, t1 = time.thread_time_ns(), time.perf_counter_ns()
                        samples.append((t1 - t0) / 1e6)
                        cpu.append((c1 - c0) / 1e6)
                        if i % 50 == 49:
                            await asyncio.sleep(0)  # let the watcher apply what arrived, as in a hub
                    after = counter.state()
                    result["ours_ms"] = samples
                    result["ours_cpu_ms"] = cpu
                    result["ours_render_calls"] = after[2] - before[2]
                    result["ours_render_requests"] = after[3] - before[3]
                    result["ours_all_requests_during_loop"] = after[1] - before[1]
                    say(f"{scale.title}: ours {scale.renders} renders, p50 {percentile(samples, 50):.3f} ms, "
                        f"p95 {percentile(samples, 95):.3f} ms; render-path API calls: {result['ours_render_calls']}")

                    result["ours_stages_ms"] = stage_breakdown(path, inventory, min(500, scale.renders))

                    gc.collect()
                    before = counter.state()
                    samples = []
                    for i in range(scale.baseline_renders):
                        t0 = time.perf_counter_ns()
                        html_base, availability_base = await render_baseline(path, core)
                        samples.append((time.perf_counter_ns() - t0) / 1e6)
                        if i == 0:  # both sides must show the same numbers, in the same page
                            html_ours, availability_ours = render_ours(path, inventory)
                            result["same_numbers"] = availability_ours == availability_base
                            result["same_html"] = html_ours == html_base
                            result["form_bytes"] = len(html_ours)
                            if not result["same_numbers"]:
                                say(f"  WARNING: counts differ: ours {availability_ours} "
                                    f"baseline {availability_base}")
                    after = counter.state()
                    result["baseline_ms"] = samples
                    result["baseline_calls_per_render"] = (after[2] - before[2]) / scale.baseline_renders
                    say(f"{scale.title}: baseline {scale.baseline_renders} renders, p50 "
                        f"{percentile(samples, 50):.1f} ms, p95 {percentile(samples, 95):.1f} ms")
                finally:
                    IN_RENDER.reset(token)
                # Where the baseline's time goes: the same two lists as raw JSON, no models.
                raw = []
                for _ in range(3):
                    t0 = time.perf_counter_ns()
                    for lister in (core.list_node, core.list_pod_for_all_namespaces):
                        response = await lister(_preload_content=False)
                        try:
                            json.loads(await response.read())
                        finally:
                            response.release()
                    raw.append((time.perf_counter_ns() - t0) / 1e6)
                result["baseline_raw_lists_ms"] = statistics.median(raw)
                result["watcher_stats"] = dict(watcher.stats)
            finally:
                await watcher.stop()
            result["snapshot_matches_recount"] = inventory.snapshot(USER_GROUPS) == inventory.recount(USER_GROUPS)
            node_pages = await raw_pages(core.list_node, None)
            pod_pages = await raw_pages(core.list_pod_for_all_namespaces, POD_FIELD_SELECTOR)
    finally:
        say(f"{scale.title}: stopping cluster {CLUSTER_NAME!r}")
        cluster.down()
    # Pure CPU work, on a quiet machine (the cluster's processes are gone).
    result["load_after_down"] = os.getloadavg()[0]
    result.update(offline_measurements(catalog, node_pages, pod_pages, scale.renders))
    say(f"{scale.title}: inventory {result['memory_mb']:.2f} MB for {result['events']} pods "
        f"({result['inventory_pods']} held); event {result['event_us_unchanged']:.1f} us apply, "
        f"{result['event_us_end_to_end']:.1f} us parse+apply")
    return result


# ---- report ----------------------------------------------------------------------------------

def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def rows(result: dict[str, Any], judged: bool) -> list[tuple[str, str, str, str]]:
    """(measure, value, target, PASS/MISS or '') for one scale; targets only where judged."""
    ours, base = result["ours_ms"], result["baseline_ms"]
    o50, o95, o99 = (percentile(ours, p) for p in (50, 95, 99))
    b50, b95 = percentile(base, 50), percentile(base, 95)
    r50, r95 = b50 / o50, b95 / o95
    calls = result["ours_render_calls"] + result["ours_render_requests"]

    def target(text: str, ok: bool) -> tuple[str, str]:
        return (text, verdict(ok)) if judged else (text + " (judged at large)", "")

    out = [
        ("pods in cluster / holding accelerators", f"{result['pods']:,} / {result['accelerator_pods']:,}", "", ""),
        ("Kubernetes calls per render, ours", f"{calls} in {len(ours):,} renders", "0", verdict(calls == 0)),
        ("Kubernetes calls per render, baseline", f"{result['baseline_calls_per_render']:g}", "", ""),
        ("render p50 / p95 / p99, ours", f"{o50:.3f} / {o95:.3f} / {o99:.3f} ms", *target("p95 <= 5 ms", o95 <= TARGET_RENDER_P95_MS)),
        ("render p50 / p95 / p99, ours, CPU time of the thread",
         " / ".join(f"{percentile(result['ours_cpu_ms'], p):.3f}" for p in (50, 95, 99)) + " ms", "", ""),
        ("render p50 / p95 / p99, ours, cluster stopped",
         " / ".join(f"{percentile(result['quiet_ours_ms'], p):.3f}" for p in (50, 95, 99)) + " ms", "", ""),
        ("render p50 / p95, baseline", f"{b50:.1f} / {b95:.1f} ms ({len(base)} renders)", "", ""),
        ("speed-up baseline / ours, p50 (p95)", f"{r50:,.0f}x ({r95:,.0f}x)", *target(">= 100x", r50 >= TARGET_SPEEDUP and r95 >= TARGET_SPEEDUP)),
        ("inventory memory (peak while relisting)", f"{result['memory_mb']:.2f} MB ({result['memory_peak_mb']:.1f} MB)", *target("<= 50 MB", result["memory_mb"] <= TARGET_MEMORY_MB)),
        ("watch event, apply only (unchanged / churn)", f"{result['event_us_unchanged']:.1f} / {result['event_us_churn']:.1f} us", "<= 50 us", verdict(max(result['event_us_unchanged'], result['event_us_churn']) <= TARGET_EVENT_US)),
        ("watch event, JSON parse + apply", f"{result['event_us_end_to_end']:.1f} us ({result['event_bytes']:,.0f} B/event)", "<= 50 us", verdict(result['event_us_end_to_end'] <= TARGET_EVENT_US)),
        ("same numbers and same HTML as baseline", f"{result['same_numbers']} / {result['same_html']}", "True", verdict(result["same_numbers"] and result["same_html"])),
    ]
    return out


def markdown(result: dict[str, Any], judged: bool) -> str:
    lines = [f"### {result['title']}: topology `{result['topology']}`, {result['pods']:,} pods", "",
             "| measure | value | target | |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows(result, judged)]
    lines += ["", "Pods by kind: " + ", ".join(f"{k} {n:,}" for k, n in result["mix"].items()) + ". "
              f"The baseline's two lists fetched as raw JSON without building models take "
              f"{result['baseline_raw_lists_ms']:.0f} ms (median of 3): the rest of its "
              f"{percentile(result['baseline_ms'], 50):.0f} ms is kubernetes_asyncio's model "
              f"deserialisation and the count.", "",
              f"Setup: cluster up {result['cluster_up_s']:.0f} s, {result['pods']:,} pods created in "
              f"{result['create_s']:.0f} s ({result['pods'] / result['create_s']:.0f}/s), all Running: "
              f"{result['all_running']} (+{result['running_wait_s']:.0f} s), watcher synced in "
              f"{result['watch_sync_s']:.1f} s with {result['watch_sync_requests']} requests; "
              f"form {result['form_bytes']:,} bytes; 1-minute load average {result['load_before_renders']:.1f} "
              f"before the renders, {result['load_after_down']:.1f} after the cluster stopped. Median ms per step of one render of ours: "
              + ", ".join(f"{k} {v:.3f}" for k, v in result["ours_stages_ms"].items()) + "."]
    return "\n".join(lines)


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM runs the finally blocks (cluster.down) as Ctrl-C does."""
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer renders and 5,000 pods at the large scale")
    parser.add_argument("--scale", choices=("small", "large", "both"), default="both")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()

    signal.signal(signal.SIGTERM, _interrupt)
    catalog = catalog_module.load(catalog_module.default_path())
    scales = [s for s in (QUICK if args.quick else FULL) if args.scale in ("both", s.key)]
    say(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, Python {platform_module.python_version()}")
    started = time.monotonic()
    results = [asyncio.run(measure_scale(scale, catalog)) for scale in scales]
    peak_rss = rusage.getrusage(rusage.RUSAGE_SELF).ru_maxrss / 2**10
    say(f"done in {time.monotonic() - started:.0f} s; peak RSS of this process {peak_rss:.0f} MB")
    print()
    for result in results:
        print(markdown(result, judged=result["scale"] == "large"))
        print()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
