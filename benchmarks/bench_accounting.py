"""Accounting benchmark (issue 15, item 7): the feed's cost per pod event, and the hub's CPU with
accounting on vs off during the spawn-form workload, side by side in one run.

1. **Feed** (no cluster): the pods of the spawn-form benchmark's AI_INFN plan (topology
   `ai-infn`, made for users as the hub and the job service make them) each go through the
   events a watch under accounting delivers (ADDED bound, MODIFIED ready, MODIFIED finished,
   DELETED). Timed: the feed alone with a sink that only counts (thread CPU per pod event), and
   the feed with the real `LedgerWriter` against a real PostgreSQL (aiinfn_dev.postgres, on the
   loopback): pod events per second until every allocation event is committed, and this
   process's CPU per pod event (feed and writer; the database server's own CPU not counted).
2. **Hub CPU** (the dev cluster, pod runner off): real hubs (tests/hub.py, the shipped RBAC)
   at once: one without accounting, one with it on (its ledger in that PostgreSQL; the shipped
   writer waits a second after an event wakes it, so events that trickle in share a
   transaction), and one with it on and the writer writing at once (its `linger` 0, the writer
   before 2026-12-05, patched in that hub's config: EAGER_PATCH; --no-eager leaves it out).
   The cluster holds the
   spawn-form benchmark's 200 pods (made for users, so accounting records them). In each
   window every hub gets the same spawn-page renders (a logged-in user, GET
   /hub/spawn at a fixed rate, alternating) and see the same pod churn (user pods created and
   deleted at a fixed rate, each through its whole life); each hub's whole-process CPU
   (utime + stime of its pid, /proc, all threads; its proxy is another process) is read
   before and after. Ratios to the hub without accounting, per window and over all windows.
   Also timed without a cluster: events written one at a time (a transaction each).

Run: .venv/bin/python benchmarks/bench_accounting.py [--quick] [--no-cluster] [--no-eager]
     [--json FILE]
About 5 minutes (2 with --quick) plus the cluster's start ($AIINFN_DEVCLUSTER_NAME, default
"bench-accounting", on $AIINFN_DEVCLUSTER_PORT or a free port; started and stopped here unless
already running). Nothing here is a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import sys
import tempfile
import time
import uuid
from collections import deque
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from aiinfn_dev import postgres  # noqa: E402
from aiinfn_dev.devcluster import topology  # noqa: E402
from aiinfn_dev.devcluster.cluster import DevCluster  # noqa: E402
from aiinfn_dev.devcluster.processes import free_port  # noqa: E402
from kubernetes_asyncio import client  # noqa: E402
from measuring import cpu_seconds, say  # noqa: E402
from spawn_form.cluster import create_pods, make_namespaces, wait_running  # noqa: E402
from spawn_form.pods import plan_pods, restricted_pod  # noqa: E402
from spawn_form.settings import ALLOW_ALL, NOTEBOOK_NAMESPACES, USER_GROUPS  # noqa: E402
from spawner_overhead.hubs import NAMESPACE, prepare_namespace  # noqa: E402

from aiinfn_hub import catalog as catalog_module  # noqa: E402
from aiinfn_hub import k8s, labels, names  # noqa: E402
from aiinfn_hub.accounting import ledger  # noqa: E402
from aiinfn_hub.accounting.events import AllocationEvent  # noqa: E402
from aiinfn_hub.accounting.feed import AccountingFeed  # noqa: E402
from aiinfn_hub.accounting.settings import URL_ENV  # noqa: E402
from aiinfn_hub.accounting.writer import LedgerWriter  # noqa: E402
from aiinfn_hub.inventory import Inventory  # noqa: E402
from tests.hub import Hub, start_hub, stop_hub  # noqa: E402

TARGET_CPU_INCREASE = 0.05
T0 = datetime(2026, 12, 5, 8, 0, 0, tzinfo=UTC)
USER = "alice"


class Counting:
    """A sink that only counts (the feed's own cost)."""

    def __init__(self) -> None:
        self.events = 0

    def submit(self, event: AllocationEvent) -> bool:
        self.events += 1
        return True

    def reconcile(self, live: Any, at: datetime) -> None:
        pass


def owned(pod: dict[str, Any], index: int) -> dict[str, Any]:
    """A planned pod made for a user: the hub's annotation on a notebook, the job service's on
    a batch pod (the Kueue label marks those)."""
    meta = pod["metadata"]
    key = labels.OWNER_NAME if labels.KUEUE_QUEUE in meta["labels"] else labels.HUB_USERNAME
    meta["annotations"] = {key: f"user{index % 40}"}
    return pod


def lifecycle(pod: dict[str, Any], index: int) -> list[tuple[str, dict[str, Any]]]:
    """The events a watch under accounting delivers for one pod, as whole objects."""
    pod = owned(json.loads(json.dumps(pod)), index)
    pod["metadata"]["uid"] = str(uuid.UUID(int=index))
    at = (T0 + timedelta(seconds=index)).strftime("%Y-%m-%dT%H:%M:%SZ")
    end = (T0 + timedelta(seconds=index + 3600)).strftime("%Y-%m-%dT%H:%M:%SZ")
    scheduled = {"type": "PodScheduled", "status": "True", "lastTransitionTime": at}
    ready = {"type": "Ready", "status": "True", "lastTransitionTime": at}
    running = {"phase": "Running", "conditions": [scheduled], "startTime": at}
    finished = {
        "phase": "Succeeded",
        "conditions": [scheduled, {**ready, "status": "False", "lastTransitionTime": end}],
        "containerStatuses": [{"name": "main", "state": {"terminated": {"finishedAt": end}}}],
    }
    states = [running, {**running, "conditions": [scheduled, ready]}, finished, finished]
    kinds = ["ADDED", "MODIFIED", "MODIFIED", "DELETED"]
    return [(kind, {**pod, "status": status}) for kind, status in zip(kinds, states, strict=True)]


def feed_for(catalog: Any, sink: Any) -> AccountingFeed:
    """The hub's feed, its nodes the topology's."""
    projects = {names.label_value(key): key for key in catalog.projects}
    feed = AccountingFeed(Inventory(catalog.accelerators), sink, projects)
    feed.node_page(topology.node_manifests("ai-infn"))
    feed.nodes_listed()
    return feed


def pod_events(catalog: Any, pods: int) -> list[tuple[str, dict[str, Any]]]:
    planned = plan_pods("ai-infn", catalog, 200)
    return [e for i in range(pods) for e in lifecycle(planned[i % len(planned)], i)]


def feed_alone(catalog: Any, events: list, rounds: int) -> dict[str, float]:
    """Thread CPU per pod event of the feed with a counting sink (best of `rounds`)."""
    best = float("inf")
    for _ in range(rounds):
        sink = Counting()
        feed = feed_for(catalog, sink)
        started = time.thread_time_ns()
        for kind, obj in events:
            feed.pod_event(kind, obj)
        best = min(best, (time.thread_time_ns() - started) / len(events))
    assert sink.events == len(events) // 2, sink.events  # a start and an end per pod
    return {"feed_us_per_event": best / 1e3, "pod_events": len(events)}


async def feed_and_writer(catalog: Any, events: list, dsn: str) -> dict[str, float]:
    """Pod events through the feed into the writer, until the ledger has committed them all
    (the writer not lingering: this times its throughput, not its wait)."""
    writer = LedgerWriter(dsn, linger=0.0)
    feed = feed_for(catalog, writer)
    task = asyncio.create_task(writer.run())
    cpu, wall = time.process_time(), time.perf_counter()
    for i, (kind, obj) in enumerate(events):
        feed.pod_event(kind, obj)
        if i % 500 == 499:
            await asyncio.sleep(0)  # the writer runs between pages, as in the hub's loop
    deadline = time.monotonic() + 600
    while writer.written < len(events) // 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    task.cancel()
    await writer.close()
    return {
        "pod_events_per_s": len(events) / wall,
        "ledger_events_per_s": writer.written / wall,
        "process_us_per_event": cpu / len(events) * 1e6,
        "written": writer.written,
    }


async def trickle(catalog: Any, events: list, dsn: str) -> dict[str, float]:
    """Pod events one at a time, each written before the next comes (a hub's quiet hours, or
    events a second apart): the writer's cost per transaction. This process's CPU per event."""
    writer = LedgerWriter(dsn)
    feed = feed_for(catalog, writer)
    cpu = time.process_time()
    for kind, obj in events:
        feed.pod_event(kind, obj)
        await writer.flush()
    cpu = time.process_time() - cpu
    await writer.close()
    return {
        "pod_events": len(events),
        "ledger_events": writer.written,
        "process_us_per_pod_event": cpu / len(events) * 1e6,
        "process_us_per_ledger_event": cpu / max(writer.written, 1) * 1e6,
    }


def churn_pod(index: int) -> dict[str, Any]:
    """A CPU-only notebook-like pod made for a user, bound to one node."""
    pod = restricted_pod(
        f"churn-{index:05d}", NOTEBOOK_NAMESPACES[0], "server4-v70", "cpu", None, 0, False
    )
    pod["metadata"]["annotations"] = {labels.HUB_USERNAME: USER}
    return pod


async def churn(core: client.CoreV1Api, rate: float, life: float, until: float, start: int) -> int:
    """Create `rate` pods a second, each deleted `life` seconds later, until `until`."""
    alive: deque[tuple[float, str]] = deque()
    index = start
    while time.monotonic() < until:
        await create_pods(core, [churn_pod(index)])
        alive.append((time.monotonic(), f"churn-{index:05d}"))
        index += 1
        while alive and time.monotonic() - alive[0][0] >= life:
            await core.delete_namespaced_pod(alive.popleft()[1], NOTEBOOK_NAMESPACES[0])
        await asyncio.sleep(1 / rate)
    for _, name in alive:
        await core.delete_namespaced_pod(name, NOTEBOOK_NAMESPACES[0])
    return index


async def renders(hubs: list[Hub], rate: float, until: float) -> int:
    """Spawn pages for USER, `rate` a second to each hub, taking turns."""
    done = 0
    while time.monotonic() < until:
        for hub in hubs:
            status, page = await asyncio.to_thread(hub.page, "/hub/spawn", USER)
            if status != 200 or "data-accelerator=" not in page:
                raise SystemExit(f"spawn page of {hub.url}: {status}")
            done += 1
        await asyncio.sleep(1 / rate)
    return done


async def window(core: Any, hubs: dict[str, Hub], args: Any, start: int) -> tuple[dict, int]:
    """One measured window: renders and churn at once; each hub's CPU seconds."""
    before = {name: cpu_seconds(hub.process.pid) for name, hub in hubs.items()}
    until = time.monotonic() + args.window
    done, index = await asyncio.gather(
        renders(list(hubs.values()), args.render_rate, until),
        churn(core, args.churn_rate, args.life, until, start),
    )
    cpu = {name: cpu_seconds(hub.process.pid) - before[name] for name, hub in hubs.items()}
    return {"cpu_s": cpu, "renders": done, "pods": index - start}, index


def start_cluster(cleanup: list) -> DevCluster:
    name = os.environ.get("AIINFN_DEVCLUSTER_NAME", "bench-accounting")
    port = int(os.environ.get("AIINFN_DEVCLUSTER_PORT") or free_port())
    cluster = DevCluster(name=name, port=port, log=say, topology_name="ai-infn", pod_runner=False)
    if cluster.up(timeout=600):
        cleanup.append(cluster.down)
    return cluster


# The writer before it lingered (hub "eager"), measured beside the shipped one: it writes as
# soon as an event wakes it, a transaction for each event that trickles in. Patched in that
# hub's config only.
EAGER_PATCH = """
from aiinfn_hub.accounting import writer as _writer
_init = _writer.LedgerWriter.__init__
def _eager_init(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    self.linger = 0.0
_writer.LedgerWriter.__init__ = _eager_init
"""


async def start_hubs(
    account: Path, tmp: Path, server: postgres.Postgres, eager: bool, cleanup: list
) -> dict[str, Hub]:
    """The hubs: accounting off, on, and on with the writer writing at once (if `eager`); one
    warm-up render each (the off hub's inventory starts with its first spawn page)."""
    variants: list[tuple[str, dict, list[str]]] = [("off", {}, [])]
    variants.append(("on", {URL_ENV: server.url(postgres.create_database(server, "on"))}, []))
    if eager:
        url = server.url(postgres.create_database(server, "eager"))
        variants.append(("eager", {URL_ENV: url}, [EAGER_PATCH]))
    hubs = {}
    for name, env, lines in variants:
        folder = tmp / name
        folder.mkdir()
        login = {USER: {"groups": list(USER_GROUPS)}}
        config = {"default_policy": ALLOW_ALL}
        hub, responder = await asyncio.to_thread(
            start_hub, folder, account, NAMESPACE, login, config, lines, env
        )
        cleanup.append(lambda hub=hub, responder=responder: stop_hub(hub, responder))
        hubs[name] = hub
    await renders(list(hubs.values()), 10.0, time.monotonic() + 5)
    return hubs


async def hub_cpu(args: Any, server: postgres.Postgres, result: dict, cleanup: list) -> None:
    catalog = catalog_module.load(catalog_module.default_path())
    cluster = start_cluster(cleanup)
    kubeconfig = cluster.layout.admin_kubeconfig
    api = await k8s.api_client(str(kubeconfig))
    cleanup.append(api.close)
    core = client.CoreV1Api(api)
    tmp = Path(tempfile.mkdtemp(prefix="bench-accounting-"))
    account = await prepare_namespace(api, kubeconfig, tmp, cleanup)
    await make_namespaces(core)
    planned = [owned(pod, i) for i, pod in enumerate(plan_pods("ai-infn", catalog, 200))]
    await create_pods(core, planned)
    await wait_running(core, limit=300)
    hubs = await start_hubs(account, tmp, server, args.eager, cleanup)
    result["load_before"] = os.getloadavg()[0]
    index, windows = 0, []
    for number in range(args.windows):
        measured, index = await window(core, hubs, args, index)
        windows.append(measured)
        cpu = ", ".join(f"{name} {value:.2f} s" for name, value in measured["cpu_s"].items())
        say(f"window {number + 1}: hub CPU {cpu}")
    result["load_after"] = os.getloadavg()[0]
    result["windows"] = windows
    result["hub_logs_accounting"] = "recording allocations" in hubs["on"].log()
    result["ledger_rows"] = {
        name: await ledger_rows(server.dsn(name)) for name in hubs if name != "off"
    }
    say(f"the accounting hubs' ledgers hold {result['ledger_rows']} events")


async def ledger_rows(dsn: str) -> int:
    """How many events the accounting hub's ledger holds (a start and an end per pod gone)."""
    from psycopg import AsyncConnection

    async with await AsyncConnection.connect(dsn) as connection:
        cursor = await connection.execute("SELECT count(*) FROM accounting_events")
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def run(args: Any, result: dict, cleanup: list) -> None:
    catalog = catalog_module.load(catalog_module.default_path())
    server = postgres.start(postgres.initdb())
    cleanup.append(lambda: postgres.remove(server))
    database = postgres.create_database(server, "feed")
    ledger.upgrade(server.url(database))
    events = pod_events(catalog, args.pods)
    result["feed"] = feed_alone(catalog, events, rounds=5)
    say(f"feed alone: {result['feed']['feed_us_per_event']:.1f} µs per pod event")
    result["writer"] = await feed_and_writer(catalog, events, server.dsn(database))
    say(f"feed + writer: {result['writer']['pod_events_per_s']:.0f} pod events/s")
    trickled = [
        (kind, {**obj, "metadata": {**obj["metadata"], "uid": f"t{i // 4}"}})
        for i, (kind, obj) in enumerate(events[:2000])
    ]
    result["trickle"] = await trickle(catalog, trickled, server.dsn(database))
    say(f"trickle: {result['trickle']['process_us_per_ledger_event']:.0f} µs per ledger event")
    if not args.no_cluster:
        await hub_cpu(args, server, result, cleanup)


def markdown(result: dict[str, Any]) -> str:
    """The results section's table rows (docs/benchmarks.md)."""
    feed, writer = result["feed"], result["writer"]
    lines = [
        f"Feed alone: **{feed['feed_us_per_event']:.1f} µs** of CPU per pod event "
        f"({feed['pod_events']} events, best of 5).",
        f"Feed + writer into PostgreSQL: **{writer['pod_events_per_s']:,.0f} pod events/s** "
        f"({writer['ledger_events_per_s']:,.0f} ledger events/s committed; "
        f"{writer['process_us_per_event']:.1f} µs of this process's CPU per pod event).",
    ]
    trickled = result["trickle"]
    lines.append(
        f"One at a time (each event written before the next): "
        f"**{trickled['process_us_per_ledger_event']:.0f} µs** of this process's CPU per ledger "
        f"event ({trickled['process_us_per_pod_event']:.0f} µs per pod event), one transaction "
        f"each."
    )
    if "windows" in result:
        lines += window_rows(result)
    return "\n".join(lines)


def window_rows(result: dict[str, Any]) -> list[str]:
    """Each window's hub CPU seconds by hub, the ratios to the hub without accounting."""
    windows = result["windows"]
    hubs = list(windows[0]["cpu_s"])
    churned = sum(w["pods"] for w in windows)
    lines = [
        f"Ledgers: {result['ledger_rows']} events (200 pods running, {churned} churned: a start "
        "each, and an end for each churned one).",
        "",
        "| Window | Renders | Pods churned | "
        + " | ".join(f"Hub CPU {h}" for h in hubs)
        + " | "
        + " | ".join(f"{h}/off" for h in hubs[1:])
        + " |",
        "|---" * (3 + 2 * len(hubs) - 1) + "|",
    ]
    total = dict.fromkeys(hubs, 0.0)
    for number, w in enumerate(windows, 1):
        cpu = w["cpu_s"]
        for h in hubs:
            total[h] += cpu[h]
        cells = [f"{cpu[h]:.2f} s" for h in hubs] + [f"{cpu[h] / cpu['off']:.3f}" for h in hubs[1:]]
        lines.append(f"| {number} | {w['renders']} | {w['pods']} | " + " | ".join(cells) + " |")
    cells = [f"{total[h]:.2f} s" for h in hubs] + [
        f"**{total[h] / total['off']:.3f}**" for h in hubs[1:]
    ]
    lines.append("| all | | | " + " | ".join(cells) + " |")
    target = 1 + TARGET_CPU_INCREASE
    lines.append("")
    lines += [
        f"Target {h}/off <= {target:.2f}: "
        + ("met." if total[h] / total["off"] <= target else "NOT met.")
        for h in hubs[1:]
    ]
    return lines


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


async def _cleanup(cleanup: list) -> None:
    for step in reversed(cleanup):
        try:
            done = step()
            if asyncio.iscoroutine(done) or isinstance(done, asyncio.Future):
                await done
        except Exception as error:  # cleaning up: report, go on
            say(f"cleanup step failed: {type(error).__name__}: {error}")


async def main_async(args: Any, result: dict) -> None:
    cleanup: list = []
    try:
        await run(args, result, cleanup)
    finally:
        await _cleanup(cleanup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 windows of 30 s, 2,000 pods")
    parser.add_argument("--no-cluster", action="store_true", help="the feed's part only")
    parser.add_argument(
        "--no-eager", action="store_true", help="no third hub with the writer writing at once"
    )
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    args.pods, args.windows, args.window = (2000, 2, 30.0) if args.quick else (20000, 3, 60.0)
    args.render_rate, args.churn_rate, args.life = 5.0, 2.0, 5.0
    args.eager = not args.no_eager
    signal.signal(signal.SIGTERM, _interrupt)
    result: dict[str, Any] = {
        "machine": f"{os.cpu_count()} cores, Python {platform.python_version()}",
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
    }
    say(f"machine: {result['machine']}, load {os.getloadavg()[0]:.2f}")
    asyncio.run(main_async(args, result))
    print()
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
