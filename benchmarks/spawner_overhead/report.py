"""The log line, the comparison of the two pods, and the markdown tables of the results."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from typing import Any

from . import metrics

# Per server, so never the same in the two pods: the hub's token and URLs, where it was placed.
PER_SERVER_ENV = ("JUPYTERHUB_", "JPY_")


def _normalised(pod: dict, users: Iterable[str]) -> dict:
    text = json.dumps(pod["spec"])
    for user in users:
        text = text.replace(user, "USER")
    spec = json.loads(text)
    spec.pop("nodeName", None)
    for container in spec.get("containers", []):
        container["env"] = sorted(
            (e for e in container.get("env", []) if not e["name"].startswith(PER_SERVER_ENV)),
            key=lambda e: e["name"],
        )
    return spec


def pod_differences(ours: dict, plain: dict, users: dict[str, str]) -> list[str]:
    """Top-level spec fields (and container fields) that differ between the two pods, once the
    user names, the placement and the per-server environment are set aside."""
    a, b = _normalised(ours, users.values()), _normalised(plain, users.values())
    differ = [k for k in sorted(set(a) | set(b)) if k != "containers" and a.get(k) != b.get(k)]
    for index, (x, y) in enumerate(zip(a["containers"], b["containers"], strict=True)):
        differ += [
            f"containers[{index}].{k}" for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)
        ]
    return differ


def _median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def wall_rows(samples: list[Any]) -> list[str]:
    walls = {v: [s.wall_s * 1000 for s in samples if s.variant == v] for v in ("aiinfn", "plain")}
    rows = []
    for name, pick in (("median", _median), ("min", min), ("max", max)):
        ours, plain = pick(walls["aiinfn"]), pick(walls["plain"])
        rows.append(
            f"| wall to ready, {name} | {ours:.0f} ms | {plain:.0f} ms | {ours / plain:.2f}x |"
        )
    return rows


def phase_rows(phases: dict[str, list[tuple[float, float]]]) -> list[str]:
    """Medians of the hub's own split of each spawn (hublog)."""
    rows = []
    for index, name in ((0, "hub: request to pod create"), (1, "hub: pod create to answer")):
        for label, pick in (("median", _median), ("min", min)):
            ours = pick(p[index] for p in phases["aiinfn"])
            plain = pick(p[index] for p in phases["plain"])
            rows.append(
                f"| {name}, {label} | {ours:.0f} ms | {plain:.0f} ms | {ours / plain:.2f}x |"
            )
    return rows


def per_spawn(samples: list[Any], variant: str) -> dict[metrics.Key, float]:
    """Median over the variant's spawns of the net count (spawn less idle) of each request."""
    chosen = [s.net() for s in samples if s.variant == variant]
    keys = {k for net in chosen for k in net}
    return {k: _median(net.get(k, 0) for net in chosen) for k in keys}


def call_rows(samples: list[Any]) -> list[str]:
    """One row per request (verb, resource, code) to the resources a spawner touches."""
    ours, plain = per_spawn(samples, "aiinfn"), per_spawn(samples, "plain")
    keys = sorted(
        k
        for k in set(ours) | set(plain)
        if metrics.is_spawner_resource(k) and (ours.get(k) or plain.get(k))
    )
    rows = [
        f"| {verb} | {resource} | {code} | {ours.get(key, 0):g} | {plain.get(key, 0):g} | "
        f"{ours.get(key, 0) - plain.get(key, 0):+g} |"
        for key in keys
        for verb, resource, _, code in [key]
    ]
    totals = []
    for picked in (ours, plain):
        totals.append(sum(v for k, v in picked.items() if metrics.is_spawner_resource(k)))
    rows.append(
        f"| **all** | spawner's resources | | {totals[0]:g} | {totals[1]:g} | "
        f"{totals[0] - totals[1]:+g} |"
    )
    other = [
        sum(
            v
            for k, v in p.items()
            if k[3] != metrics.SECONDS and not metrics.is_spawner_resource(k)
        )
        for p in (ours, plain)
    ]
    rows.append(
        f"| (all) | other resources (cluster background, net of idle) | | "
        f"{other[0]:g} | {other[1]:g} | |"
    )
    return rows


def server_time_rows(samples: list[Any]) -> list[str]:
    """Median per spawn of the API server's time on the spawner's resources, and on Secrets."""
    rows = []
    for title, resource in (("all the spawner's resources", None), ("secrets", "secrets")):
        ours, plain = (
            _median(
                metrics.server_seconds(s.net(), resource) * 1000 for s in samples if s.variant == v
            )
            for v in ("aiinfn", "plain")
        )
        rows.append(
            f"| API server time per spawn, {title}, median | {ours:.1f} ms | "
            f"{plain:.1f} ms | {ours - plain:+.1f} ms |"
        )
    return rows


def first_spawn_rows(first: dict[str, dict[metrics.Key, float]]) -> list[str]:
    """The warm-up spawn of each hub (not subtracted): what is made once per hub."""
    keys = sorted(
        k for k in set(first["aiinfn"]) | set(first["plain"]) if metrics.is_spawner_resource(k)
    )
    return [
        f"| {k[0]} | {k[1]} | {k[3]} | {first['aiinfn'].get(k, 0)} | {first['plain'].get(k, 0)} |"
        for k in keys
    ]


def step_lines(steps: dict[str, float]) -> list[str]:
    return [
        "AiInfnSpawner's own steps, each alone (median):",
        "",
        f"- resolve, placement and volumes (pure): {steps['pure_ms']:.3f} ms",
        f"- token Secret written with none there (PUT 404, then POST): "
        f"{steps['sync_absent']:.1f} ms",
        f"- the same Secret created (POST only): {steps['create']:.1f} ms",
        f"- token Secret rewritten while it exists (PUT 200): {steps['sync_present']:.1f} ms",
    ]


def markdown(result: dict[str, Any], samples: list[Any]) -> str:
    lines = [
        f"{result['spawns']} spawns per variant, interleaved; load average "
        f"{result['load_before']:.1f} before, {result['load_after']:.1f} after.",
        "",
        "| measure | AiInfnSpawner | KubeSpawner | AiInfn / plain |",
        "|---|---|---|---|",
        *wall_rows(samples),
        *phase_rows(result["phases"]),
        *server_time_rows(samples),
        "",
        "Kubernetes requests per spawn (median over the spawns, less an idle window as long):",
        "",
        "| verb | resource | code | AiInfnSpawner | KubeSpawner | difference |",
        "|---|---|---|---|---|---|",
        *call_rows(samples),
        "",
        "First spawn of each hub (its warm-up, not in the table above; not net of idle):",
        "",
        "| verb | resource | code | AiInfnSpawner | KubeSpawner |",
        "|---|---|---|---|---|",
        *first_spawn_rows(result["first"]),
        "",
        f"Pod spec fields that differ: {', '.join(result['differences']) or 'none'}.",
        "",
        *step_lines(result["steps"]),
    ]
    return "\n".join(lines)
