"""The API server's own request counters (`apiserver_request_total` of /metrics), and deltas."""

from __future__ import annotations

import re
from collections import Counter

from kubernetes_asyncio import client

LINE = re.compile(
    r"^(apiserver_request_total|apiserver_request_duration_seconds_sum)"
    r"\{([^}]*)\} ([0-9.e+-]+)$"
)
LABEL = re.compile(r'(\w+)="([^"]*)"')
# What a spawner can touch; everything else (leases, nodes, ...) is the cluster's background.
SPAWNER_RESOURCES = frozenset(
    {
        "pods",
        "secrets",
        "configmaps",
        "persistentvolumeclaims",
        "events",
        "services",
        "namespaces",
        "serviceaccounts",
    }
)

Key = tuple[str, str, str, str]  # verb, resource[/subresource], group, code (or SECONDS)
SECONDS = "seconds"


def parse(text: str) -> Counter[Key]:
    """Request counts by verb, resource, group and code, and (code "seconds") the time the API
    server spent on them by verb, resource and group; non-resource URLs left out."""
    counts: Counter[Key] = Counter()
    for line in text.splitlines():
        match = LINE.match(line)
        if not match:
            continue
        labels = dict(LABEL.findall(match[2]))
        if not labels.get("resource"):
            continue
        resource = labels["resource"]
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        if match[1] == "apiserver_request_total":
            counts[(labels["verb"], resource, labels.get("group", ""), labels["code"])] += int(
                float(match[3])
            )
        elif labels["verb"] not in ("WATCH", "CONNECT"):
            counts[(labels["verb"], resource, labels.get("group", ""), SECONDS)] += float(match[3])
    return counts


def delta(after: Counter[Key], before: Counter[Key]) -> dict[Key, float]:
    """after - before, negative entries kept (an idle window can outnumber a spawn's)."""
    keys = set(after) | set(before)
    return {k: after[k] - before[k] for k in keys if after[k] != before[k]}


def minus(spawn: dict[Key, float], idle: dict[Key, float]) -> dict[Key, float]:
    """A spawn window's counts less an idle window of the same length."""
    keys = set(spawn) | set(idle)
    return {k: spawn.get(k, 0) - idle.get(k, 0) for k in keys}


def is_spawner_resource(key: Key) -> bool:
    return key[1].split("/")[0] in SPAWNER_RESOURCES and key[3] != SECONDS


def server_seconds(counts: dict[Key, float], resource: str | None = None) -> float:
    """The API server's time on the spawner's resources (or on one resource) in `counts`."""
    return sum(
        v
        for k, v in counts.items()
        if k[3] == SECONDS and k[1].split("/")[0] in SPAWNER_RESOURCES and resource in (None, k[1])
    )


async def read(api: client.ApiClient) -> Counter[Key]:
    """The counters now, read with the admin's client (one GET of /metrics, a non-resource URL,
    so it never counts itself)."""
    response = await api.call_api(
        "/metrics",
        "GET",
        auth_settings=["BearerToken"],
        _preload_content=False,
        _return_http_data_only=True,
    )
    try:
        return parse((await response.read()).decode())
    finally:
        response.release()
