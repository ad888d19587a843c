"""The hub under load: simulated users log in, open the spawn form, spawn, stop; jobs meanwhile.

A real JupyterHub (tests/hub.py: the repository's configuration, the shipped RBAC, the demo
login) and the job service beside it, on the benchmark's own dev cluster with the pod runner off
(kwok marks the pods Running; a local stand-in answers for each server). Simulated users arrive
at a steady rate (--rate per second, --users in all), each in its own cookie session
(hub_load/client.py): the login form and its POST, a token for scripts (made with the admin's),
the spawn form and its POST (a CPU-only server), the pending page and its progress event stream
until the server is ready (or, with --poll, the user's model polled each second), the server
kept --hold seconds and stopped through the API.
Every --job-every-th user also submits one small CPU job to the job service through the hub's
proxy while its server starts (the projects' queues are held, so no job pod runs). A 429 from the
hub (concurrent_spawn_limit) or the service is waited out for its Retry-After and tried again; a
failed spawn is tried again after a pause, three tries in all. The default topology,
`synthetic-1000`, has room for every server at once (250 CPU nodes of 64 cores).

Baseline, same run: before the load, --baseline users go through the same steps one at a time,
on the same hub. Measured: each request's latency by kind, under load and in the baseline; the
CPU of the hub, its proxy, the job service, kube-apiserver and kwok (utime+stime from /proc) over
the load; per user, whether and after how many tries its server was ready; the 429s and their
Retry-After. Targets (issue 19): page and API p95 <= 1 s, hub <= 1 core, no failed spawn that a
retry would not fix.

Run: .venv/bin/python benchmarks/bench_hub_load.py [--users 500] [--rate 2] [--spawn-limit N]
[--start-delay SECONDS] [--json FILE]. --start-delay makes each server take that long to start,
as a real image pull and start would, so that spawns pile up against --spawn-limit. About
--users / --rate seconds plus a minute of draining, plus the cluster's start
($AIINFN_DEVCLUSTER_NAME, default "bench-load", on $AIINFN_DEVCLUSTER_PORT or a free port;
started and stopped here unless already running). Nothing here is a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import lifecycle  # noqa: E402
from hub_load import report, setup  # noqa: E402
from hub_load.client import Outcome, Recorder, User  # noqa: E402
from measuring import say  # noqa: E402

from aiinfn_hub import k8s  # noqa: E402


async def arrive(
    names: list[str], rate: float, make: Any, args: argparse.Namespace
) -> list[Outcome]:
    """Start one user every 1/rate seconds (open loop: whatever the earlier ones do)."""
    connector = aiohttp.TCPConnector(limit=0)
    started, tasks = time.perf_counter(), []
    for index, name in enumerate(names):
        await asyncio.sleep(max(0.0, started + index / rate - time.perf_counter()))
        tasks.append(
            asyncio.create_task(make(name).run(connector, args.hold, index % args.job_every == 0))
        )
        if index % 50 == 49:
            say(f"  {index + 1} users arrived, {sum(t.done() for t in tasks)} done")
    outcomes = await asyncio.gather(*tasks)
    await connector.close()
    return outcomes


async def baseline(names: list[str], make: Any, args: argparse.Namespace) -> None:
    """The same steps, one user at a time, on the quiet hub."""
    connector = aiohttp.TCPConnector(limit=0)
    for index, name in enumerate(names):
        outcome = await make(name).run(connector, args.hold, index % args.job_every == 0)
        if not outcome.ready or outcome.error:
            raise SystemExit(f"baseline user {name} failed: {outcome}")
    await connector.close()


async def run(args: argparse.Namespace, result: dict[str, Any], cleanup: list) -> None:
    cluster, result["cluster"] = setup.start_cluster(args.topology, cleanup)
    api = await k8s.api_client(str(cluster.layout.admin_kubeconfig))
    cleanup.append(api.close)
    tmp = Path(tempfile.mkdtemp(prefix="bench-load-"))
    quiet = [f"base{i:02d}" for i in range(args.baseline)]
    loaded = [f"user{i:04d}" for i in range(args.users)]
    platform_ = await setup.start_platform(
        cluster, api, tmp, quiet + loaded, args.spawn_limit, args.start_delay, cleanup
    )
    hub = platform_.hub
    recorder = Recorder()

    def make(name: str) -> User:
        user = User(name, hub.url, hub.password, hub.token, recorder)
        user.poll = args.poll
        return user

    say(f"baseline: {args.baseline} users one at a time")
    await baseline(quiet, make, args)
    recorder.phase = "load"
    result["load_before"] = os.getloadavg()
    sampler = report.CpuSampler(platform_.pids())
    sampler.start()
    say(f"load: {args.users} users at {args.rate}/s")
    started = time.perf_counter()
    outcomes = await arrive(loaded, args.rate, make, args)
    result["load_s"] = round(time.perf_counter() - started, 1)
    result["cpu"] = await sampler.stop()
    result["load_after"] = os.getloadavg()
    result["latency_ms"] = report.latencies(recorder.requests)
    result["overall_ms"] = report.overall(recorder.requests)
    result["outcomes"] = report.outcomes(outcomes)
    result["hub_log_warnings"] = hub.log().count(" pending spawns, throttling.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=500, help="simulated users under load")
    parser.add_argument("--rate", type=float, default=2.0, help="users arriving per second")
    parser.add_argument("--baseline", type=int, default=10, help="users one at a time, before")
    parser.add_argument("--hold", type=float, default=10.0, help="seconds a server is kept")
    parser.add_argument("--job-every", type=int, default=2, help="every Nth user submits a job")
    parser.add_argument(
        "--spawn-limit", type=int, help="c.JupyterHub.concurrent_spawn_limit (default: as shipped)"
    )
    parser.add_argument(
        "--start-delay",
        type=float,
        default=0.0,
        help="seconds before kwok marks a notebook pod Running (default 0: at once)",
    )
    parser.add_argument(
        "--poll",
        action="store_true",
        help="wait for a server by polling the user's model each second (a script's way), "
        "not by the progress stream (the spawn-pending page's)",
    )
    parser.add_argument(
        "--topology",
        default="synthetic-1000",
        help="the dev cluster's nodes (ai-infn holds about 15 CPU-only servers at once)",
    )
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    lifecycle.stop_on_sigterm()
    say(
        f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, "
        f"Python {platform.python_version()}"
    )
    result = asyncio.run(lifecycle.run_then_clean_up(run, args, {"args": vars(args)}))
    print()
    print(report.markdown(result))
    print(json.dumps(result["overall_ms"]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
