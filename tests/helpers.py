"""Small helpers for tests: polling with a generous limit, and restricted-compliant pod bodies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

# A limit for waiting on the cluster, not an assertion about speed: tests never time anything.
WAIT_LIMIT = 60.0


async def wait_until(
    check: Callable[[], Awaitable[Any]], what: str, limit: float = WAIT_LIMIT, interval: float = 0.2
) -> Any:
    """Poll check() until it returns something truthy; fail naming `what` after `limit` seconds."""
    deadline = time.monotonic() + limit
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(interval)


async def has_default_service_account(core, namespace: str) -> bool:
    """Pods are refused until the controller-manager has made the namespace's default account."""
    accounts = await core.list_namespaced_service_account(namespace)
    return any(a.metadata.name == "default" for a in accounts.items)


def restricted_container(
    name: str = "main",
    image: str = "registry.invalid/aiinfn/test:1",
    limits: dict[str, str] | None = None,
    command: list[str] | None = None,
) -> dict:
    """A container that satisfies Pod Security "restricted"."""
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
    }
    if limits:
        container["resources"]["limits"] = dict(limits)
        container["resources"]["requests"].update(limits)
    if command:
        container["command"] = command
    return container


def restricted_pod(name: str, **container_kwargs: Any) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "automountServiceAccountToken": False,
            "containers": [restricted_container(**container_kwargs)],
        },
    }
