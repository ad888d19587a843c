"""Offload benchmark: the paper's Figure 2 (CPU-only LHCb FlashSim jobs over four remote sites).

In one run, against one real control plane (kube-apiserver, Kueue with topology-aware flavors,
kwok playing the four interLink virtual nodes with their start latency, run-time jitter and
failure rate: devcluster/components.py SITES), the same JOBS CPU-only jobs are submitted through
the job service (HTTP POSTs with hub tokens, the service as the hub's ServiceAccount with the
shipped RBAC), with `offload: "may"` and a deadline so every site's policy accepts them:

- four sites: the service's default site policy (INFN-T1, Podman VM, Leonardo, HPC-Bubble);
- baseline, one flavor: the service restarted with `c.AiInfnJobs.sites` holding INFN-T1 alone
  (the platform before item 4: one interLink node), the very same requests.

Sampled every SAMPLE_S: pods Running per site node, Workloads not admitted, of which those
Kueue found no room for (QuotaReserved False: "jobs waiting"), Jobs done. Reported: time to
drain the queue (first submission to the last Job finished), per-site utilisation (Running pods
/ the site's slots, over the time jobs waited), per site the longest time it ran nothing while
jobs waited (target: no longer than its start latency) and when its first job ran.
Hours of site time are compressed: a job runs RUNTIME (+ its site's jitter) in kwok, set by its
DEVCLUSTER_SITE_RUNTIME environment variable, where the paper's run for hours; RUNTIME is long
against the control plane's few seconds of turnover per job, so the sites' slots, not the
turnover, set the pace. Each job asks CPU_PER_JOB cores so a site holds tens of jobs, not
thousands, and even the Podman VM holds one. Samples go to benchmarks/offload/samples.json;
the PNG is drawn from them.

Run: .venv/bin/python -m benchmarks.bench_offload [--jobs N] [--json FILE]
     python -m benchmarks.bench_offload --plot-only   (needs matplotlib, the dev platform's
                                                       `bench` extra; redraws the PNG)
It uses (or starts and then stops) the dev cluster named by $AIINFN_DEVCLUSTER_NAME (default
"bench-offload") on $AIINFN_DEVCLUSTER_PORT (default: a free port). Nothing here is a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import lifecycle
from measuring import say

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "offload"
PNG = ROOT / "docs" / "figure2_offload.png"
SAMPLE_S = 0.5
JOBS = 120
# 64 cores: slots INFN-T1 31, Podman VM 1, Leonardo 62, HPC-Bubble 15 (109, fewer than JOBS, so
# every site fills and jobs wait); smaller jobs make hundreds of slots, more jobs than a run of
# a few minutes on 2 cores can send before any job waits.
CPU_PER_JOB = 64
RUNTIME = "60s"
USERS = {f"flash{i}": {"groups": ["lhcb-flashsim"]} for i in range(4)}
REQUEST = {
    "name": "flashsim",
    "command": ["python", "-m", "flashsim", "--events", "10000"],
    "cpu": str(CPU_PER_JOB),
    "memory": "4Gi",
    "offload": "may",
    "deadline_seconds": 3600,
    "env": {"DEVCLUSTER_SITE_RUNTIME": RUNTIME},
}
SITE_LABEL = "virtual-node.interlink/site"


# -- analysis (pure) ---------------------------------------------------------------------------


def drain_seconds(samples: list[dict[str, Any]], jobs: int) -> float | None:
    """Seconds from the first submission to the first sample with every job finished."""
    return next((s["t"] for s in samples if s["done"] >= jobs), None)


def jobs_waited(sample: dict[str, Any]) -> bool:
    """Some Workload was refused room by Kueue (evaluated, no flavor had it). Workloads still in
    the admission pipeline (just created, not yet evaluated) are not waiting for a site."""
    return sample["refused"] > 0


def utilisation(samples: list[dict[str, Any]], slots: dict[str, int]) -> dict[str, float]:
    """Mean Running pods / slots per site over the samples where jobs waited."""
    busy = [s for s in samples if jobs_waited(s)] or samples
    return {
        site: sum(s["running"].get(site, 0) for s in busy) / (len(busy) * n)
        for site, n in slots.items()
    }


def longest_idle(
    samples: list[dict[str, Any]],
    slots: dict[str, int],
    step: float = SAMPLE_S,
    unreserved_only: bool = False,
) -> dict[str, float]:
    """Per site, the longest run of samples in which it ran nothing while jobs waited: pods it
    is still starting count as idle, as its start latency does, and so do pods of jobs Kueue
    admitted there that are still being created. With `unreserved_only`, only while Kueue also
    held less than the site's slots for admitted jobs (an admission Kueue could have made)."""
    result = {}
    for site, size in slots.items():
        longest = run = 0.0
        for sample in samples:
            idle = jobs_waited(sample) and not sample["running"].get(site, 0)
            if unreserved_only:
                idle = idle and sample["reserved"].get(site, 0) < size
            run = run + step if idle else 0.0
            longest = max(longest, run)
        result[site] = longest
    return result


def idle_after_first_job(
    samples: list[dict[str, Any]], slots: dict[str, int], step: float | None
) -> dict[str, float]:
    """longest_idle counted from each site's first running job on (its turnovers, not the
    ramp-up from the first submission)."""
    first = first_running(samples, slots)
    return {
        site: longest_idle(
            [s for s in samples if s["t"] >= first[site]], {site: size}, step or SAMPLE_S
        )[site]
        for site, size in slots.items()
    }


def reserved_flavors(workload: dict[str, Any]) -> list[str]:
    """The flavors an admitted, unfinished Workload holds quota of (one per pod set)."""
    status = workload.get("status") or {}
    finished = any(
        c["type"] == "Finished" and c["status"] == "True" for c in status.get("conditions") or ()
    )
    if finished or not status.get("admission"):
        return []
    return [
        next(iter(assignment.get("flavors", {}).values()), "")
        for assignment in status["admission"].get("podSetAssignments") or ()
    ]


def first_running(samples: list[dict[str, Any]], slots: dict[str, int]) -> dict[str, float]:
    """Per site, the first sample's time at which it ran a job (the ramp-up: submission, Kueue
    admitting in flavor order, the site's start latency)."""
    return {
        site: next((s["t"] for s in samples if s["running"].get(site)), float("nan"))
        for site in slots
    }


def allowed_slots(run: dict[str, Any]) -> dict[str, int]:
    """The slots of the sites this run's policy allowed (flavor = node name in the dev cluster)."""
    flavors = run.get("flavors")
    return {n: k for n, k in run["slots"].items() if flavors is None or n in flavors}


def summary(run: dict[str, Any]) -> dict[str, Any]:
    samples, slots = run["samples"], allowed_slots(run)
    return {
        "drain_s": drain_seconds(samples, run["jobs"]),
        "utilisation": utilisation(samples, slots),
        "longest_idle_s": longest_idle(samples, slots, run.get("step", SAMPLE_S)),
        "first_running_s": first_running(samples, slots),
        "longest_idle_unreserved_s": longest_idle(
            samples, slots, run.get("step", SAMPLE_S), unreserved_only=True
        ),
        "longest_idle_after_first_s": idle_after_first_job(samples, slots, run.get("step")),
        "peak_running": max(sum(s["running"].values()) for s in samples),
    }


# -- plot (matplotlib imported here only) ------------------------------------------------------


def plot(result: dict[str, Any], path: Path = PNG) -> None:
    """Figure 2's look: running jobs per site over time, stacked; the one-site baseline below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [result["runs"]["four_sites"], result["runs"]["one_site"]]
    figure, axes = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True, sharey=True)
    for axis, run, title in zip(
        axes, runs, ("four sites (offload: may)", "baseline: INFN-T1 only"), strict=True
    ):
        times = [s["t"] for s in run["samples"]]
        sites = list(run["slots"])
        stacks = [[s["running"].get(site, 0) for s in run["samples"]] for site in sites]
        axis.stackplot(times, stacks, labels=[run["names"][site] for site in sites], step="post")
        axis.axhline(sum(allowed_slots(run).values()), color="grey", ls=":", lw=1, label="slots")
        axis.set_title(title, fontsize=10)
        axis.set_ylabel("running jobs")
        axis.grid(alpha=0.3)
        queue = axis.twinx()  # the queue is tens of times the running jobs: its own scale
        queue.plot(times, [s["waiting"] for s in run["samples"]], "k--", lw=1, label="waiting")
        queue.set_ylabel("jobs not admitted (dashed)")
    axes[0].legend(loc="upper right", fontsize=8)
    axes[1].set_xlabel(f"seconds since the first submission ({result['jobs']} jobs)")
    figure.suptitle("CPU-only FlashSim-like jobs per remote site (dev cluster, compressed time)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    say(f"wrote {path}")


# -- the run (cluster, hub, service) -----------------------------------------------------------


class Cluster:
    """The dev cluster, its admin client (to observe only) and the namespace the service uses."""

    def __init__(self, cleanup: list) -> None:
        sys.path.insert(0, str(ROOT))
        from aiinfn_dev.devcluster.cluster import DevCluster
        from aiinfn_dev.devcluster.processes import free_port

        name = os.environ.get("AIINFN_DEVCLUSTER_NAME", "bench-offload")
        port = int(os.environ.get("AIINFN_DEVCLUSTER_PORT") or free_port())
        # No pod runner: every job pod goes to a site's virtual node, which kwok plays.
        self.dev = DevCluster(name=name, port=port, log=say, pod_runner=False)
        self.cleanup = cleanup

    async def start(self) -> None:
        from aiinfn_dev import kueue_config
        from kubernetes_asyncio import client

        from aiinfn_hub import k8s, labels

        if await asyncio.to_thread(self.dev.up, 600):
            self.cleanup.append(self.dev.down)
        self.api = await k8s.api_client(str(self.dev.layout.admin_kubeconfig))
        self.cleanup.append(self.api.close)
        await k8s.apply_objects(self.api, ROOT / "helm-values" / "priority-classes.yaml")
        await kueue_config.apply(self.api, kueue_config.cluster_objects(kueue_config.load()))
        self.core = client.CoreV1Api(self.api)
        self.namespace = f"bench-offload-{uuid.uuid4().hex[:6]}"
        meta = {
            "name": self.namespace,
            "labels": {
                labels.POD_SECURITY_ENFORCE: "restricted",
                labels.MANAGED_BY: "aiinfn-hub-bench",
            },
        }
        await self.core.create_namespace({"metadata": meta})
        self.cleanup.append(lambda: self.core.delete_namespace(self.namespace))
        await kueue_config.apply(
            self.api, kueue_config.local_queues(kueue_config.load(), self.namespace)
        )

    async def sites(self) -> tuple[dict[str, int], dict[str, str]]:
        """Each site node's slots for one job (its CPU; memory is ample) and its site label."""
        from aiinfn_hub.quantities import parse

        slots, names = {}, {}
        for node in (await self.core.list_node(label_selector=SITE_LABEL)).items:
            free = node.status.allocatable
            cpu, pods = parse(free["cpu"]), parse(free["pods"])
            if cpu >= CPU_PER_JOB:
                slots[node.metadata.name] = int(min(cpu // CPU_PER_JOB, pods))
                names[node.metadata.name] = node.metadata.labels[SITE_LABEL]
        return slots, names

    async def _list(self, path: str) -> list[dict[str, Any]]:
        response = await self.api.call_api(
            path, "GET", auth_settings=["BearerToken"], _preload_content=False
        )
        body = json.loads(await response.read())
        response.release()
        return body["items"]

    async def sample(self, t: float) -> dict[str, Any]:
        ns = self.namespace
        pods = await self._list(f"/api/v1/namespaces/{ns}/pods")
        workloads = await self._list(f"/apis/kueue.x-k8s.io/v1beta2/namespaces/{ns}/workloads")
        jobs = await self._list(f"/apis/batch/v1/namespaces/{ns}/jobs")
        running: dict[str, int] = {}
        for pod in pods:
            if pod.get("status", {}).get("phase") == "Running":
                node = pod["spec"].get("nodeName", "")
                running[node] = running.get(node, 0) + 1
        pending = [w for w in workloads if not (w.get("status") or {}).get("admission")]
        reserved: dict[str, int] = {}
        for flavor in (f for w in workloads for f in reserved_flavors(w)):
            reserved[flavor] = reserved.get(flavor, 0) + 1
        refused = sum(
            1
            for w in pending
            if any(
                c["type"] == "QuotaReserved" and c["status"] == "False"
                for c in (w.get("status") or {}).get("conditions") or []
            )
        )
        done = sum(
            1
            for j in jobs
            if any(
                c["type"] in ("Complete", "Failed") and c["status"] == "True"
                for c in (j.get("status") or {}).get("conditions") or []
            )
        )
        failed_pods = sum(1 for p in pods if p.get("status", {}).get("phase") == "Failed")
        return {
            "t": round(t, 2),
            "running": running,
            "waiting": len(pending),
            "refused": refused,
            "reserved": reserved,
            "done": done,
            "failed_pods": failed_pods,
        }

    async def clean(self) -> None:
        from kubernetes_asyncio import client

        batch = client.BatchV1Api(self.api)
        await batch.delete_collection_namespaced_job(
            self.namespace, propagation_policy="Background"
        )
        while await self._list(f"/api/v1/namespaces/{self.namespace}/pods") or await self._list(
            f"/apis/kueue.x-k8s.io/v1beta2/namespaces/{self.namespace}/workloads"
        ):
            await asyncio.sleep(1)


class Submitter:
    """The hub and the job service as the hub's ServiceAccount; POSTs through the hub's proxy."""

    def __init__(self, cluster: Cluster, cleanup: list) -> None:
        self.cluster, self.cleanup = cluster, cleanup
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-offload-"))

    async def start(self) -> None:
        from aiinfn_dev import hubaccount
        from aiinfn_dev.devcluster.processes import free_port
        from tornado.httpclient import AsyncHTTPClient

        from tests.hub import start_hub, stop_hub
        from tests.jobs_service import PREFIX, Service, hub_lines

        api, namespace = self.cluster.api, self.cluster.namespace
        port, token = free_port(), secrets.token_hex(32)
        lines = hub_lines(
            port, token, rate_limit=10_000.0, rate_limit_burst=10_000, max_unfinished_jobs=100_000
        )
        kubeconfig = self.cluster.dev.layout.admin_kubeconfig
        account = await hubaccount.hub_kubeconfig(
            api, namespace, kubeconfig, self.tmp / "hub.kubeconfig"
        )
        self.cleanup.append(lambda: hubaccount.delete_cluster_objects(api, namespace))
        spawner = {"default_policy": {"accelerators": "*", "environments": "*"}}
        self.hub, responder = await asyncio.to_thread(
            start_hub, self.tmp, account, namespace, USERS, spawner, lines
        )
        self.cleanup.append(lambda: asyncio.to_thread(stop_hub, self.hub, responder))
        self.service = Service(self.tmp, self.hub, port, token)
        self.cleanup.append(lambda: asyncio.to_thread(self.service.stop))
        self.tokens = []
        for user in USERS:
            _, body = await asyncio.to_thread(
                self.hub.request, "POST", f"/users/{user}/tokens", {"note": "bench"}
            )
            self.tokens.append(body["token"])
        self.url = f"{self.hub.url}{PREFIX}api/jobs"
        self.http = AsyncHTTPClient(force_instance=True, max_clients=16)

    async def restart(self, sites: dict[str, Any] | None) -> None:
        """The service (again), with these site policies (None: its defaults)."""
        await asyncio.to_thread(self.service.stop)
        # A Python literal: traitlets reads a Dict given on the command line with literal_eval.
        args = [f"--AiInfnJobs.sites={sites!r}"] if sites is not None else []
        await asyncio.to_thread(self.service.start, None, *args)

    async def submit(self, tag: str, count: int) -> None:
        from tornado.httpclient import HTTPRequest

        queue = iter(range(count))

        async def worker() -> None:
            for index in queue:
                body = json.dumps({**REQUEST, "idempotency_key": f"{tag}-{index}"})
                headers = {
                    "Authorization": f"token {self.tokens[index % len(self.tokens)]}",
                    "Content-Type": "application/json",
                }
                request = HTTPRequest(
                    self.url, method="POST", body=body, headers=headers, request_timeout=60
                )
                await self.http.fetch(request)

        await asyncio.gather(*(worker() for _ in range(8)))


def default_sites() -> dict[str, Any]:
    from aiinfn_hub.services.jobs.app import AiInfnJobs

    return dict(AiInfnJobs().sites)


async def one_run(
    cluster: Cluster, submitter: Submitter, sites: dict[str, Any] | None, jobs: int
) -> dict[str, Any]:
    """Submit `jobs` jobs with these site policies; sample until all are finished."""
    await cluster.clean()
    await submitter.restart(sites)
    slots, names = await cluster.sites()
    started = time.monotonic()
    submitting = asyncio.ensure_future(submitter.submit(uuid.uuid4().hex[:8], jobs))
    samples = []
    while True:
        sample = await cluster.sample(time.monotonic() - started)
        samples.append(sample)
        if sample["done"] >= jobs or sample["t"] > 900:
            break
        await asyncio.sleep(max(0.0, started + len(samples) * SAMPLE_S - time.monotonic()))
    await submitting
    submitted_s = round(time.monotonic() - started, 1)
    say(f"{len(names) if sites is None else len(sites)} site(s): drained at {samples[-1]['t']} s")
    return {
        "jobs": jobs,
        "slots": slots,
        "flavors": None if sites is None else sorted(v["flavor"] for v in sites.values()),
        "names": names,
        "step": SAMPLE_S,
        "samples": samples,
        "submit_s_upper_bound": submitted_s,
    }


async def run(args: argparse.Namespace, result: dict[str, Any], cleanup: list) -> None:
    cluster = Cluster(cleanup)
    await cluster.start()
    submitter = Submitter(cluster, cleanup)
    await submitter.start()
    everything = default_sites()
    t1 = {k: v for k, v in everything.items() if v["flavor"] == "interlink-infn-t1"}
    result["jobs"], result["sites_config"] = args.jobs, everything
    result["cpu_per_job"], result["runtime"] = CPU_PER_JOB, RUNTIME
    result["runs"] = {}
    for name, sites in (("four_sites", None), ("one_site", t1)):
        say(f"run {name}: {args.jobs} jobs")
        result["runs"][name] = await one_run(cluster, submitter, sites, args.jobs)
    result["load_average"] = os.getloadavg()[0]
    from aiinfn_dev.devcluster.components import SITES

    # The most a site's kwok stage waits before a pod runs: [start_ms, start_ms + jitter].
    result["start_latency_s"] = {s.node: (s.start_ms + s.start_jitter_ms) / 1000 for s in SITES}


def report(result: dict[str, Any]) -> str:
    four, one = (summary(result["runs"][k]) for k in ("four_sites", "one_site"))
    names = result["runs"]["four_sites"]["names"]
    slots = result["runs"]["four_sites"]["slots"]
    latency = result["start_latency_s"]
    lines = [
        "| measure | four sites | baseline (INFN-T1 only) | ratio |",
        "|---|---|---|---|",
        f"| time to drain the queue | {four['drain_s']} s | {one['drain_s']} s | "
        f"{one['drain_s'] / four['drain_s']:.2f}x faster |",
        f"| peak running jobs | {four['peak_running']} | {one['peak_running']} | |",
    ]
    for node, site in names.items():
        u4, u1 = four["utilisation"][node], one["utilisation"].get(node)
        baseline = "-" if u1 is None else f"{u1:.0%}"
        lines.append(f"| {site} ({slots[node]} slots): utilisation | {u4:.0%} | {baseline} | |")
    lines += [
        "",
        "| site | longest idle, jobs waiting | start latency (max) | | after its first job |"
        " with unreserved capacity | first job ran |",
        "|---|---|---|---|---|---|---|",
    ]
    for run, stats in (("four sites", four), ("baseline", one)):
        for node, idle in stats["longest_idle_s"].items():
            verdict = "PASS" if idle <= latency[node] else "MISS"
            unreserved = stats["longest_idle_unreserved_s"][node]
            after = stats["longest_idle_after_first_s"][node]
            first = stats["first_running_s"][node]
            lines.append(
                f"| {names[node]}, {run} | {idle:.1f} s | {latency[node]:.1f} s | {verdict} | "
                f"{after:.1f} s | {unreserved:.1f} s | {first:.1f} s |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=JOBS, help="jobs per run")
    parser.add_argument("--json", type=Path, default=OUT / "samples.json", help="raw samples")
    parser.add_argument("--plot-only", action="store_true", help="redraw the PNG from --json")
    args = parser.parse_args()
    if args.plot_only:
        result = json.loads(args.json.read_text())
        print(report(result))
        plot(result)
        return
    lifecycle.stop_on_sigterm()
    started = time.monotonic()
    result = asyncio.run(lifecycle.run_then_clean_up(run, args, {}))
    result["whole_run_s"] = round(time.monotonic() - started, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, separators=(",", ":")))
    print(report(result))
    say(f"whole run {result['whole_run_s']} s; samples in {args.json}")


if __name__ == "__main__":
    main()
