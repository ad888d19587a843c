"""Job service benchmark: submissions through the service vs. raw creates of the same Jobs.

Side by side, in one run, against the same real kube-apiserver (with Kueue's webhooks on every
Job create):

- baseline: kubernetes_asyncio `create_namespaced_job` of the very manifest the service builds
  (made here by the service's own code from the same request), read back as raw JSON, as the
  service's store does; the fastest a client can create these Jobs.
- ours: HTTP POSTs of the JobRequest to the running service through the hub's proxy, each with
  a user's hub token: authentication (cached by HubAuth), strict validation, policy, volumes,
  the identity record (cached), the manifest and the same create.

Measured: sustained submissions per second at a fixed concurrency (alternating rounds, so both
see the same cluster state; target: ours >= 50% of the baseline), and latency at a paced
50 requests/s, open loop (each request leaves on schedule, whatever the earlier ones do; target:
p99 <= 100 ms), in alternating 10 s blocks per variant; also at 10/s, and the CPU each process
spends per submission. Every measurement starts from an empty namespace. The Jobs go to the
projects' LocalQueues held (stopPolicy: Hold), so Kueue makes their Workloads but admits none and
no pods load the cluster (the cluster's pod runner is off: no pod needs a real process).

Run: .venv/bin/python benchmarks/bench_jobs.py [--quick] [--json FILE]
It uses (or starts and then stops) the dev cluster named by $AIINFN_DEVCLUSTER_NAME (default
"bench-jobs") on $AIINFN_DEVCLUSTER_PORT (default: a free port). Nothing here is a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lifecycle  # noqa: E402
from aiinfn_dev import hubaccount, kueue_config  # noqa: E402
from aiinfn_dev.devcluster.cluster import DevCluster  # noqa: E402
from aiinfn_dev.devcluster.processes import free_port  # noqa: E402
from measuring import cpu_seconds, percentile, say  # noqa: E402

from aiinfn_hub import k8s, labels  # noqa: E402
from aiinfn_hub.services.base import HubUser  # noqa: E402
from aiinfn_hub.services.jobs.app import AiInfnJobs  # noqa: E402
from aiinfn_hub.services.jobs.manifests import JobMeta, make_job  # noqa: E402
from aiinfn_hub.services.jobs.plan import resolve  # noqa: E402
from aiinfn_hub.services.jobs.request import JobRequest  # noqa: E402
from tests.hub import REPO, Hub, start_hub, stop_hub  # noqa: E402
from tests.jobs_service import PREFIX, Service, hub_lines  # noqa: E402

USERS = {f"bench{i}": {"groups": ["cms-ml"]} for i in range(8)}
SPAWNER = {"default_policy": {"accelerators": "*", "environments": "*", "max_accelerators": 2}}
REQUEST = {
    "name": "train",
    "command": ["python", "train.py", "--epochs", "10"],
    "accelerator": "t4",
    "env": {"EPOCHS": "10"},
}
CONCURRENCY = 16
PACED_RATE = 50.0
LIGHT_RATE = 10.0
TARGET_RATIO = 0.5
TARGET_P99_MS = 100.0


class CpuMeter:
    """CPU milliseconds per submission of each process over one measurement, less what the
    process burns when idle (Kueue and the API server keep busy with pending Workloads)."""

    def __init__(self, pids: dict[str, int], idle: dict[str, float] | None = None) -> None:
        self.pids = pids
        self.idle = idle or {name: 0.0 for name in pids}
        self.started = time.perf_counter()
        self.before = {name: cpu_seconds(pid) for name, pid in pids.items()}

    def rates(self) -> dict[str, float]:
        """CPU seconds per second since the start."""
        elapsed = time.perf_counter() - self.started
        return {
            name: (cpu_seconds(pid) - self.before[name]) / elapsed
            for name, pid in self.pids.items()
        }

    def per_submission(self, count: int) -> dict[str, float]:
        elapsed = time.perf_counter() - self.started
        return {
            name: round(
                max(0.0, cpu_seconds(pid) - self.before[name] - self.idle[name] * elapsed)
                * 1000
                / count,
                2,
            )
            for name, pid in self.pids.items()
        }


async def sustained(count: int, one: Callable[[int], Awaitable[None]]) -> float:
    """Submissions per second for `count` submissions, CONCURRENCY at a time."""
    queue = iter(range(count))

    async def worker() -> None:
        for index in queue:
            await one(index)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return count / (time.perf_counter() - started)


async def paced(seconds: float, rate: float, one: Callable[[int], Awaitable[None]]) -> list[float]:
    """Latencies (ms) of requests sent open loop at `rate` per second for `seconds`."""
    latencies: list[float] = []
    start = time.perf_counter()

    async def timed(index: int) -> None:
        sent = time.perf_counter()
        await one(index)
        latencies.append((time.perf_counter() - sent) * 1000)

    tasks = []
    for index in range(int(seconds * rate)):
        delay = start + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(timed(index)))
    await asyncio.gather(*tasks)
    return latencies


class Bench:
    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        hub_url: str,
        service_port: int,
        tokens: dict[str, str],
        manifest: dict[str, Any],
    ) -> None:
        self.api = api
        self.batch = client.BatchV1Api(api)
        self.namespace = namespace
        self.url = f"{hub_url}{PREFIX}api/jobs"
        self.direct_url = f"http://127.0.0.1:{service_port}{PREFIX}api/jobs"
        self.tokens = list(tokens.values())
        self.manifest = manifest
        self.http = AsyncHTTPClient(force_instance=True, max_clients=CONCURRENCY * 4)
        self.round = 0

    def next_round(self) -> str:
        self.round += 1
        return f"r{self.round}-{uuid.uuid4().hex[:6]}"

    async def clean(self) -> None:
        """Delete every Job (their Workloads go with them) and wait until both are gone, so each
        measurement starts from the same, empty namespace."""
        await self.batch.delete_collection_namespaced_job(
            self.namespace, propagation_policy="Background"
        )
        custom = client.CustomObjectsApi(self.api)
        while True:
            jobs = await self.batch.list_namespaced_job(self.namespace, limit=1)
            workloads = await custom.list_namespaced_custom_object(
                "kueue.x-k8s.io", "v1beta2", self.namespace, "workloads", limit=1
            )
            if not jobs.items and not workloads["items"]:
                return
            await asyncio.sleep(1)

    def raw(self, tag: str) -> Callable[[int], Awaitable[None]]:
        async def one(index: int) -> None:
            body = json.loads(json.dumps(self.manifest))
            body["metadata"]["name"] = f"raw-{tag}-{index}"
            response = await self.batch.create_namespaced_job(
                self.namespace, body, _preload_content=False
            )
            payload = await response.read()
            response.release()
            if response.status != 201:
                raise RuntimeError(f"raw create: {response.status} {payload[:300]!r}")
            json.loads(payload)

        return one

    def service(self, tag: str, direct: bool = False) -> Callable[[int], Awaitable[None]]:
        """Through the hub's proxy, as users reach it (or straight to the service: `direct`)."""
        url = self.direct_url if direct else self.url

        async def one(index: int) -> None:
            body = json.dumps({**REQUEST, "idempotency_key": f"{tag}-{index}"})
            token = self.tokens[index % len(self.tokens)]
            try:
                response = await self.http.fetch(
                    HTTPRequest(
                        url,
                        method="POST",
                        body=body,
                        headers={
                            "Authorization": f"token {token}",
                            "Content-Type": "application/json",
                        },
                        request_timeout=60,
                    )
                )
            except HTTPClientError as error:
                raise RuntimeError(
                    f"service: {error.code} {error.response.body[:300] if error.response else ''!r}"
                ) from error
            json.loads(response.body)

        return one


def start_cluster(cleanup: list) -> tuple[DevCluster, dict[str, Any]]:
    """The dev cluster named by the environment, started (and stopped at the end) if not running.

    The pod runner stays off: no Job is ever admitted (the queues are held) and the hub runs as
    a local process, so no pod needs a real process; this measures submissions."""
    name = os.environ.get("AIINFN_DEVCLUSTER_NAME", "bench-jobs")
    port = int(os.environ.get("AIINFN_DEVCLUSTER_PORT") or free_port())
    cluster = DevCluster(name=name, port=port, log=say, pod_runner=False)
    started = time.monotonic()
    if cluster.up(timeout=600):
        cleanup.append(cluster.down)
    elif any(p.name == "pod-runner" for p in cluster.status().processes):
        say(
            f"cluster {name!r} was already running, with its pod runner on: the runner's "
            "watch adds to the API server's load"
        )
    return cluster, {"name": name, "up_s": round(time.monotonic() - started, 1)}


async def held_namespace(api: client.ApiClient, cleanup: list) -> str:
    """A restricted namespace whose LocalQueues hold every Workload (stopPolicy: Hold), with the
    priority classes and the cluster's Kueue objects applied."""
    await k8s.apply_objects(api, REPO / "helm-values" / "priority-classes.yaml")
    await kueue_config.apply(api, kueue_config.cluster_objects(kueue_config.load()))
    core = client.CoreV1Api(api)
    namespace = f"bench-jobs-{uuid.uuid4().hex[:6]}"
    await core.create_namespace(
        {
            "metadata": {
                "name": namespace,
                "labels": {
                    labels.POD_SECURITY_ENFORCE: "restricted",
                    labels.MANAGED_BY: "aiinfn-hub-bench",
                },
            }
        }
    )
    cleanup.append(lambda: core.delete_namespace(namespace))
    held = kueue_config.local_queues(kueue_config.load(), namespace)
    for queue in held:
        queue["spec"]["stopPolicy"] = "Hold"
    await kueue_config.apply(api, held)
    return namespace


async def start_service(
    api: client.ApiClient, namespace: str, kubeconfig: Path, tmp: Path, cleanup: list
) -> tuple[Hub, Service, int, dict[str, str]]:
    """The hub and the job service, as the hub's ServiceAccount with the shipped RBAC (the raw
    baseline creates with the admin client); (hub, service, its port, a token per user)."""
    service_port, token = free_port(), secrets.token_hex(32)
    # A round makes 1,000 jobs for 8 users: above the per-user default of unfinished jobs.
    lines = hub_lines(
        service_port,
        token,
        rate_limit=10_000.0,
        rate_limit_burst=10_000,
        max_unfinished_jobs=100_000,
    )
    account = await hubaccount.hub_kubeconfig(api, namespace, kubeconfig, tmp / "hub.kubeconfig")
    cleanup.append(lambda: hubaccount.delete_cluster_objects(api, namespace))
    hub, responder = await asyncio.to_thread(
        start_hub, tmp, account, namespace, USERS, SPAWNER, lines
    )
    cleanup.append(lambda: asyncio.to_thread(stop_hub, hub, responder))
    service = Service(tmp, hub, service_port, token)
    await asyncio.to_thread(service.start)
    cleanup.append(lambda: asyncio.to_thread(service.stop))
    tokens = {}
    for user in USERS:
        status, body = await asyncio.to_thread(
            hub.request, "POST", f"/users/{user}/tokens", {"note": "bench"}
        )
        tokens[user] = body["token"]
    return hub, service, service_port, tokens


async def baseline_manifest(api: client.ApiClient, tmp: Path) -> dict[str, Any]:
    """The baseline's manifest: what the service builds for this request, by the service's code."""
    jobs_app = AiInfnJobs()
    jobs_app.load_config_file("jupyterhub_config.py", path=str(tmp))
    operations = jobs_app.service(api)
    caller = HubUser("bench0", frozenset({"cms-ml"}), False)
    request = JobRequest(**REQUEST)
    plan = resolve(
        request,
        caller,
        operations.platform.catalog,
        operations.platform.policy(caller),
        operations.rules,
    )
    return make_job(
        JobMeta("template", "k", request.digest(), "{}"),
        plan,
        await operations._parts(caller, plan),
        operations.build,
    )


async def measure_sustained(
    bench: Bench, args: argparse.Namespace, pids: dict[str, int]
) -> tuple[dict[str, list[float]], dict[str, dict[str, float]]]:
    """Submissions per second of each variant in alternating rounds, and the CPU per submission
    of each process (last round), less what it burns when idle."""
    say("warming up (tokens cached, identities recorded, connections open)")
    await sustained(CONCURRENCY * 2, bench.service(bench.next_round()))
    await sustained(CONCURRENCY * 2, bench.raw(bench.next_round()))
    await bench.clean()
    idle_meter = CpuMeter(pids)
    await asyncio.sleep(5)
    idle = idle_meter.rates()
    rates: dict[str, list[float]] = {"raw": [], "service": []}
    cpu: dict[str, dict[str, float]] = {}
    for round_index in range(args.rounds):
        for kind in ("raw", "service"):
            await bench.clean()
            meter = CpuMeter(pids, idle)
            rate = await sustained(args.count, getattr(bench, kind)(bench.next_round()))
            cpu[kind] = meter.per_submission(args.count)
            rates[kind].append(rate)
            say(
                f"round {round_index + 1}: {kind} {rate:.1f} submissions/s ({args.count} at "
                f"concurrency {CONCURRENCY})"
            )
    return rates, cpu


async def measure_paced(bench: Bench, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Latencies at PACED_RATE and LIGHT_RATE, in short alternating blocks, so each variant sees
    the same background load."""
    latencies = {}
    variants = {
        "raw": bench.raw,
        "service": bench.service,
        "direct": lambda tag: bench.service(tag, direct=True),
    }
    for rate, kinds in (
        (PACED_RATE, ("raw", "service", "direct")),
        (LIGHT_RATE, ("raw", "service")),
    ):
        samples: dict[str, list[float]] = {kind: [] for kind in kinds}
        for _ in range(args.blocks):
            for kind in kinds:
                await bench.clean()
                samples[kind] += await paced(
                    args.seconds / args.blocks, rate, variants[kind](bench.next_round())
                )
        for kind in kinds:
            key = f"{kind}@{rate:.0f}"
            latencies[key] = {
                "n": len(samples[kind]),
                "p50": percentile(samples[kind], 50),
                "p95": percentile(samples[kind], 95),
                "p99": percentile(samples[kind], 99),
                "max": max(samples[kind]),
            }
            say(
                f"paced {rate:.0f}/s, {kind}: p50 {latencies[key]['p50']:.1f} / p95 "
                f"{latencies[key]['p95']:.1f} / p99 {latencies[key]['p99']:.1f} ms "
                f"({len(samples[kind])} requests)"
            )
    return latencies


async def run(args: argparse.Namespace, result: dict[str, Any], cleanup: list) -> None:
    cluster, result["cluster"] = start_cluster(cleanup)
    kubeconfig = cluster.layout.admin_kubeconfig
    api = await k8s.api_client(str(kubeconfig))
    cleanup.append(api.close)
    namespace = await held_namespace(api, cleanup)
    tmp = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    hub, service, service_port, tokens = await start_service(
        api, namespace, kubeconfig, tmp, cleanup
    )
    manifest = await baseline_manifest(api, tmp)
    bench = Bench(api, namespace, hub.url, service_port, tokens, manifest)
    pids = {
        "service": service.process.pid,
        "proxy": int((tmp / "proxy.pid").read_text()),
        "hub": hub.process.pid,
        **{
            p.name: p.pid
            for p in cluster.status().processes
            if p.name in ("kube-apiserver", "etcd", "kueue")
        },
    }
    rates, cpu = await measure_sustained(bench, args, pids)
    latencies = await measure_paced(bench, args)
    raw_rate, service_rate = statistics.mean(rates["raw"]), statistics.mean(rates["service"])
    result.update(
        {
            "rates": rates,
            "raw_rate": raw_rate,
            "service_rate": service_rate,
            "ratio": service_rate / raw_rate,
            "latency_ms": latencies,
            "cpu_ms_per_submission": cpu,
            "load_average": os.getloadavg()[0],
        }
    )


def report(result: dict[str, Any]) -> None:
    ratio = result["ratio"]
    latency = result["latency_ms"]
    p99 = latency[f"service@{PACED_RATE:.0f}"]["p99"]

    def row(key: str) -> str:
        return (
            f"{latency[key]['p50']:.1f} / {latency[key]['p95']:.1f} / {latency[key]['p99']:.1f} ms"
        )

    fast, light = f"{PACED_RATE:.0f}", f"{LIGHT_RATE:.0f}"
    ratio_verdict = "PASS" if ratio >= TARGET_RATIO else "MISS"
    p99_verdict = "PASS" if p99 <= TARGET_P99_MS else "MISS"
    print(f"""
| measure | value | target | |
|---|---|---|---|
| sustained submissions/s, raw creates (concurrency {CONCURRENCY}) | {result["raw_rate"]:.1f} | | |
| sustained submissions/s, through the service | {result["service_rate"]:.1f} | | |
| service / raw | {ratio:.0%} | >= {TARGET_RATIO:.0%} | {ratio_verdict} |
| at {fast}/s, raw creates p50 / p95 / p99 | {row(f"raw@{fast}")} | | |
| at {fast}/s, service through the proxy p50 / p95 / p99 | {row(f"service@{fast}")} \
| p99 <= {TARGET_P99_MS:.0f} ms | {p99_verdict} |
| at {fast}/s, service direct p50 / p95 / p99 | {row(f"direct@{fast}")} | | |
| at {light}/s, raw creates p50 / p95 / p99 | {row(f"raw@{light}")} | | |
| at {light}/s, service through the proxy p50 / p95 / p99 | {row(f"service@{light}")} | | |

CPU ms per submission (last round): raw {result["cpu_ms_per_submission"]["raw"]}
service {result["cpu_ms_per_submission"]["service"]}
Rounds: {result["rates"]}; load average {result["load_average"]:.1f}; \
Python {platform.python_version()}, {os.cpu_count()} cores.""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer submissions and a shorter paced run"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    args.count, args.rounds, args.seconds, args.blocks = (
        (200, 2, 10.0, 2) if args.quick else (1000, 3, 30.0, 3)
    )
    lifecycle.stop_on_sigterm()
    result = asyncio.run(lifecycle.run_then_clean_up(run, args, {}))
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
