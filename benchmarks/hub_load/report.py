"""The log line, the CPU sampler and the markdown tables of a load run."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from measuring import cpu_seconds, percentile

from .client import PAGES, Outcome, Request

SAMPLE_S = 1.0
WINDOW_S = 10  # samples in the busiest window reported beside the mean


class CpuSampler:
    """Each process's CPU time every SAMPLE_S, from start() until stop()."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.task: asyncio.Task | None = None

    def sample(self) -> None:
        now = time.perf_counter()
        self.samples.append((now, {name: cpu_seconds(pid) for name, pid in self.pids.items()}))

    async def _loop(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_S)

    def start(self) -> None:
        self.task = asyncio.create_task(self._loop())

    async def stop(self) -> dict[str, dict[str, float]]:
        """Per process: mean cores over the whole run and over its busiest WINDOW_S seconds."""
        assert self.task is not None
        self.task.cancel()
        self.sample()
        (t0, first), (t1, last) = self.samples[0], self.samples[-1]
        result = {}
        for name in self.pids:
            busiest = max(
                (
                    (self.samples[i + WINDOW_S][1][name] - self.samples[i][1][name])
                    / (self.samples[i + WINDOW_S][0] - self.samples[i][0])
                    for i in range(len(self.samples) - WINDOW_S)
                ),
                default=0.0,
            )
            result[name] = {"mean": (last[name] - first[name]) / (t1 - t0), "busiest": busiest}
        return result


def latencies(requests: Iterable[Request]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per kind and phase: count, p50/p95/p99/max in ms, the statuses seen."""
    grouped: dict[tuple[str, str], list[Request]] = defaultdict(list)
    for request in requests:
        grouped[request.kind, request.phase].append(request)
    table: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for (kind, phase), group in grouped.items():
        seconds = [r.seconds for r in group]
        statuses: dict[int, int] = defaultdict(int)
        for r in group:
            statuses[r.status] += 1
        table[kind][phase] = {
            "n": len(group),
            **{f"p{p}": round(percentile(seconds, p) * 1000) for p in (50, 95, 99)},
            "max": round(max(seconds) * 1000),
            "statuses": dict(sorted(statuses.items())),
        }
    return dict(table)


def outcomes(users: list[Outcome]) -> dict[str, Any]:
    """Spawns: ready at the first try, after a retry, never; the 429s and their hints."""
    hints = [h for u in users for h in u.throttled]
    waits = [u.spawn_wait_s for u in users if u.ready]
    jobs: dict[str, int] = defaultdict(int)
    for u in users:
        if u.job is not None:
            jobs[str(u.job)] += 1
    return {
        "users": len(users),
        "ready": sum(u.ready for u in users),
        "ready_first_try": sum(u.ready and not u.failures for u in users),
        "ready_after_retry": sum(u.ready and bool(u.failures) for u in users),
        "never_ready": [(u.user, u.failures, u.error) for u in users if not u.ready],
        "errors": [(u.user, u.error) for u in users if u.error],
        "failures": sorted({f for u in users for f in u.failures}),
        "throttled_users": sum(bool(u.throttled) for u in users),
        "throttled_users_served": sum(u.ready for u in users if u.throttled),
        "throttled": len(hints),
        "retry_after_s": [min(hints), max(hints)] if hints else [],
        "spawn_wait_s": {f"p{p}": round(percentile(waits, p), 1) for p in (50, 95)}
        if waits
        else {},
        "jobs": dict(jobs),
        "job_refusals": sorted({u.job_refusal for u in users if u.job_refusal}),
    }


def _row(kind: str, phases: dict[str, dict[str, Any]]) -> str:
    base, load = phases.get("baseline", {}), phases.get("load", {})
    statuses = ", ".join(f"{k}: {v}" for k, v in load.get("statuses", {}).items())
    return (
        f"| {kind} | {'page' if kind in PAGES else 'API'} | {load.get('n', 0)} "
        f"| {base.get('p50', '-')} / {base.get('p95', '-')} "
        f"| {load.get('p50', '-')} | {load.get('p95', '-')} | {load.get('p99', '-')} "
        f"| {load.get('max', '-')} | {statuses} |"
    )


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| request | kind | n (load) | baseline p50 / p95 ms | p50 ms | p95 ms | p99 ms "
        "| max ms | statuses (load) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
        *(_row(kind, phases) for kind, phases in result["latency_ms"].items()),
        "",
        "| process | mean cores (load) | busiest 10 s |",
        "|---|---:|---:|",
        *(
            f"| {name} | {cpu['mean']:.2f} | {cpu['busiest']:.2f} |"
            for name, cpu in result["cpu"].items()
        ),
        "",
        f"spawns: {result['outcomes']}",
    ]
    return "\n".join(lines)


def overall(requests: list[Request]) -> dict[str, dict[str, int]]:
    """p50 and p95 in ms of all pages and of all API requests, per phase."""
    result = {}
    for phase in ("baseline", "load"):
        for kind, pages in (("pages", True), ("API", False)):
            seconds = [
                r.seconds for r in requests if r.phase == phase and (r.kind in PAGES) == pages
            ]
            if seconds:
                result[f"{kind} {phase}"] = {
                    f"p{p}": round(percentile(seconds, p) * 1000) for p in (50, 95, 99)
                }
    return result
