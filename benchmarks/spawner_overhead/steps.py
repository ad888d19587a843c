"""AiInfnSpawner's own steps of a spawn, each timed on its own (after the spawns, same cluster).

- the pure part of load_user_options: profiles.resolve of the default options, placement's
  traits and volumes.build for a user in one project (no I/O), many times;
- the token Secret as a spawn after a stop writes it (tokens.sync finds no Secret: PUT answered
  404, then POST), with the hub account's client, and a plain create of the same Secret.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from aiinfn_hub import hubstate, k8s, placement, profiles, tokens, volumes
from aiinfn_hub.identity import Identity
from aiinfn_hub.platform_config import AiInfnPlatform
from aiinfn_hub.policy import for_user
from aiinfn_hub.storage_config import AiInfnStorage

from .hubs import AUTH_STATE, GROUPS, NAMESPACE, SPAWNER

USER = "steps"


def pure_ms(rounds: int = 2000) -> float:
    """Median ms of the pure work AiInfnSpawner adds to a CPU spawn."""
    platform = hubstate.load(AiInfnPlatform(default_policy=SPAWNER["default_policy"]))
    settings = AiInfnStorage().settings()
    policy = for_user(platform.default_rules, platform.group_rules, GROUPS)
    projects = tuple(p.key for p in platform.catalog.projects_of(GROUPS))
    identity = Identity(100000, {p: 200000 + i for i, p in enumerate(projects)})
    where = placement.PlacementSettings("aiinfn-notebook", "aiinfn.infn.it/reserved", (), False)
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        plan = profiles.resolve(platform.catalog, policy, {}, 0)
        placement.spawner_traits(plan, policy.groups, where)
        user = volumes.StorageUser(USER, identity, projects, token=True)
        volumes.build(
            settings, user, settings.default_scratch_size, settings.default_shm_size, plan.image
        )
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


async def _median_ms(
    step: Callable[[], Awaitable[Any]], after: Callable[[], Awaitable[Any]], rounds: int
) -> float:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        await step()
        samples.append(time.perf_counter() - started)
        await after()
    return statistics.median(samples) * 1000


async def secret_ms(account: Path, rounds: int = 20) -> dict[str, float]:
    """Median ms of the token Secret write as a spawn makes it, and of a bare create."""
    token = AUTH_STATE["access_token"]
    api = await k8s.api_client(str(account))
    async with api:
        core = client.CoreV1Api(api)

        async def remove() -> None:
            await tokens.delete(api, NAMESPACE, USER)

        sync = await _median_ms(lambda: tokens.sync(api, NAMESPACE, USER, token), remove, rounds)
        body = tokens.make_secret(USER, token)
        create = await _median_ms(
            lambda: core.create_namespaced_secret(NAMESPACE, body), remove, rounds
        )
        await tokens.sync(api, NAMESPACE, USER, token)
        replace = await _median_ms(
            lambda: tokens.sync(api, NAMESPACE, USER, token), lambda: _nothing(), rounds
        )
        await remove()
    return {"sync_absent": sync, "create": create, "sync_present": replace}


async def _nothing() -> None:
    return None
