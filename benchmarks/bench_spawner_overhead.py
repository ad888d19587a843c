"""Spawner overhead: one spawn through AiInfnSpawner vs. plain KubeSpawner, same pod, same run.

Two real JupyterHub processes (tests/hub.py) on the benchmark's own dev cluster, both as the
ServiceAccount `hub` with the shipped RBAC, in one namespace with the storage claims:

- aiinfn: the repository's configuration (AiInfnSpawner); the user has an access token in
  auth_state (as after an IAM login), so the spawn writes the token Secret.
- plain: `kubespawner.KubeSpawner` whose pod is given every spec field of the pod AiInfnSpawner
  made in its warm-up spawn (image, resources, volumes, init container, security contexts,
  placement, priority class), so both create the same pod.

After one warm-up spawn per hub (the reflectors start; reported apart), the two take turns
(aiinfn first in even rounds, plain first in odd ones). Each spawn is a REST POST of the default
server with an empty body; wall time runs until the hub says the server is ready (start()
returned once KubeSpawner saw the pod Running, and the hub reached its URL; kwok marks pods
Running, the pod runner is off and a local stand-in answers for the server). The API server's
`apiserver_request_total` is read (admin client, /metrics) before and after the spawn and after
an idle window as long as the spawn, which is subtracted. Then the server is stopped and its pod
waited for, outside every window. The hub logs split each spawn at the pod create
(spawner_overhead/hublog.py). Last, AiInfnSpawner's own steps are timed one by one
(spawner_overhead/steps.py): the pure work of load_user_options and the token Secret write.

Run: .venv/bin/python benchmarks/bench_spawner_overhead.py [--spawns N] [--json FILE]
About 3 minutes with the default 20 spawns per variant, plus about 20 s to start the cluster
($AIINFN_DEVCLUSTER_NAME, default "bench-overhead", on $AIINFN_DEVCLUSTER_PORT or a free port;
started and stopped here unless already running). Nothing here is a test.
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
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from measuring import say  # noqa: E402
from spawner_overhead import hublog, hubs, spawns, steps  # noqa: E402
from spawner_overhead.report import markdown, pod_differences  # noqa: E402

from aiinfn_hub import k8s  # noqa: E402


async def warm_up(
    result: dict[str, Any], api: Any, account: Path, tmp: Path, cleanup: list
) -> dict[str, Any]:
    """Start both hubs; one unmeasured-for-the-table spawn each (kept as `first`)."""
    users = hubs.USERS
    ours = await hubs.start_one("aiinfn", account, tmp, cleanup, [])
    first = await spawns.measured("aiinfn", ours, api, users["aiinfn"], keep_pod=True)
    pod = first.pod
    await spawns.stop(ours, api, users["aiinfn"])
    plain = await hubs.start_plain(account, tmp, cleanup, pod)
    first_plain = await spawns.measured("plain", plain, api, users["plain"], keep_pod=True)
    result["differences"] = pod_differences(pod, first_plain.pod, users)
    await spawns.stop(plain, api, users["plain"])
    result["first"] = {"aiinfn": first.spawn, "plain": first_plain.spawn}
    result["first_wall_s"] = {"aiinfn": first.wall_s, "plain": first_plain.wall_s}
    result["pods"] = {"aiinfn": pod, "plain": first_plain.pod}
    return {"aiinfn": ours, "plain": plain}


async def run(args: argparse.Namespace, result: dict[str, Any], cleanup: list) -> list[Any]:
    cluster, result["cluster"] = hubs.start_cluster(cleanup)
    kubeconfig = cluster.layout.admin_kubeconfig
    api = await k8s.api_client(str(kubeconfig))
    cleanup.append(api.close)
    tmp = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    account = await hubs.prepare_namespace(api, kubeconfig, tmp, cleanup)
    running = await warm_up(result, api, account, tmp, cleanup)
    say(f"warm-up done; pod spec differences: {result['differences'] or 'none'}")
    result["load_before"] = os.getloadavg()[0]
    samples = []
    for index in range(args.spawns):
        order = ("aiinfn", "plain") if index % 2 == 0 else ("plain", "aiinfn")
        for variant in order:
            sample = await spawns.measured(variant, running[variant], api, hubs.USERS[variant])
            say(f"  {index + 1}/{args.spawns} {variant}: {sample.wall_s * 1000:.0f} ms")
            samples.append(sample)
    result["load_after"] = os.getloadavg()[0]
    result["spawns"] = args.spawns
    # The hub logs' first spawn is the warm-up.
    result["phases"] = {
        v: hublog.phases(hub.log_path, hubs.USERS[v])[1:] for v, hub in running.items()
    }
    result["steps"] = {"pure_ms": steps.pure_ms(), **await steps.secret_ms(account)}
    return samples


def as_json(result: dict[str, Any], samples: list[Any]) -> dict[str, Any]:
    def counts(deltas: dict) -> dict[str, int]:
        return {" ".join(key): value for key, value in sorted(deltas.items())}

    return {
        **result,
        "first": {v: counts(d) for v, d in result["first"].items()},
        "samples": [
            {
                "variant": s.variant,
                "wall_s": s.wall_s,
                "spawn": counts(s.spawn),
                "idle": counts(s.idle),
            }
            for s in samples
        ],
    }


async def main_async(args: argparse.Namespace) -> tuple[dict[str, Any], list[Any]]:
    result: dict[str, Any] = {}
    cleanup: list = []
    try:
        samples = await run(args, result, cleanup)
    finally:
        for step in reversed(cleanup):
            outcome = step()
            if asyncio.iscoroutine(outcome) or isinstance(outcome, asyncio.Future):
                await outcome
    return result, samples


def _interrupt(signum, frame) -> None:  # noqa: ANN001 (signal handler signature)
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spawns", type=int, default=20, help="measured spawns per variant")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    say(
        f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, "
        f"Python {platform.python_version()}"
    )
    result, samples = asyncio.run(main_async(args))
    print()
    print(markdown(result, samples))
    if args.json:
        args.json.write_text(json.dumps(as_json(result, samples), indent=1))


if __name__ == "__main__":
    main()
