"""The culler's decision for one server: jupyterhub-idle-culler's `cull_arbiter_hook`.

jupyterhub-idle-culler lists the ready servers, measures each one's inactivity and asks this
arbiter whether to stop it; the arbiter gathers what the culler's own API calls do not give
(the user's groups from the hub, the GPU's utilisation from Prometheus), applies rules.py,
writes warnings (warnings.py) and answers True only when the server is due and was warned.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote, urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from ..catalog import Catalog
from . import rules
from .warnings import WarningStore

log = logging.getLogger("aiinfn.culling")
# What a server's accelerators report, by catalog kind: DCGM_FI_DEV_GPU_UTIL (percent) for whole
# GPUs; MIG instances do not report it, the profiling field DCGM_FI_PROF_GR_ENGINE_ACTIVE (a
# ratio, 0 to 1) they do (c.AiInfnCulling.mig_metric). (metric, factor to percent)
GPU_METRIC = ("DCGM_FI_DEV_GPU_UTIL", 1.0)


def pod_name(template: str, scheme: str, user: str, server: str) -> str:
    """The pod KubeSpawner names for this server: its own expansion of pod_name_template,
    given what it reads of a spawner (the user id is not known here: refused by check)."""
    from kubespawner import KubeSpawner

    spawner = SimpleNamespace(
        name=server, user=SimpleNamespace(name=user, id=0), slug_scheme=scheme,
        _namespace_default=lambda: "", pod_name="", pvc_name="", namespace="",
    )  # fmt: skip
    return KubeSpawner._expand_user_properties(spawner, template, scheme)


def check_template(template: str) -> str:
    if "{userid}" in template:
        raise ValueError("the culler cannot name pods from a pod_name_template with {userid}")
    return template


def gpu_query(namespace: str, pod: str, window: float, metric: tuple[str, float]) -> str:
    """Every accelerator of the pod at its busiest over the window, in percent
    (dcgm-exporter's pod labels)."""
    name, factor = metric
    selector = f'namespace="{_quoted(namespace)}",pod="{_quoted(pod)}"'
    query = f"max(max_over_time({name}{{{selector}}}[{int(window)}s]))"
    return query if factor == 1 else f"{factor:g} * {query}"


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def age_seconds(started: str | None, now: float) -> float:
    if not started:
        return 0.0
    moment = datetime.fromisoformat(started.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, now - moment.timestamp())


@dataclass
class Arbiter:
    """jupyterhub-idle-culler's cull_arbiter_hook (culler_config.py builds it)."""

    limits: rules.Limits
    threshold: float
    exempt_groups: frozenset[str]
    catalog: Catalog
    namespace: str
    pod_template: str
    slug_scheme: str
    hub_url: str
    token: str
    prometheus_url: str
    store: WarningStore
    mig_metric: str = ""

    async def __call__(self, *, inactive: Any, server: dict, **_: Any) -> bool:
        now = time.time()
        key = server["full_name"]
        user, _, name = key.partition("/")
        started = server.get("started") or ""
        facts = await self.facts(user, name, server, inactive.total_seconds(), now)
        found = rules.verdict(self.limits, facts)
        warned_for = self.store.warned_for(key, started, now)
        action = rules.action(self.limits, found, warned_for)
        if action is rules.Action.WARN and found is not None:
            label = f"'{name}'" if name else "(default)"
            due = rules.due_in(self.limits, found, warned_for)
            text = rules.message(found, due, label, self.threshold)
            if warned_for is None:
                log.info("Warning %s: %s in %.0f s", key, found.reason, due)
            self.store.warn(key, user, started, now, text)
        else:
            self.store.clear(key, now)
        if action is rules.Action.CULL and found is not None:
            log.info("Culling %s: %s (warned %.0f s before)", key, found.reason, warned_for or 0)
        return action is rules.Action.CULL

    async def facts(
        self, user: str, name: str, server: dict, inactive: float, now: float
    ) -> rules.Server:
        age = age_seconds(server.get("started"), now)
        if self.exempt_groups and self.exempt_groups & await self.groups(user):
            return rules.Server(inactive=inactive, age=age, accelerator=False, exempt=True)
        options = server.get("user_options") or {}
        chosen = self.catalog.accelerators.get(str(options.get("accelerator", "")))
        accelerator = chosen is not None and chosen.kind != "cpu"
        gpu_idle = None
        metric = GPU_METRIC
        if chosen is not None and chosen.kind == "mig":
            metric = (self.mig_metric, 100.0)
        if self.prometheus_url and self.limits.gpu_idle_time > 0 and metric[0]:
            pod = pod_name(self.pod_template, self.slug_scheme, user, name)
            windows = await self.gpu_windows(pod, metric)
            gpu_idle = rules.gpu_idle_seconds(windows, age)
            accelerator = accelerator or bool(windows)  # a GPU reported for it holds one
        return rules.Server(inactive=inactive, age=age, accelerator=accelerator, gpu_idle=gpu_idle)

    async def groups(self, user: str) -> frozenset[str]:
        request = HTTPRequest(
            f"{self.hub_url}/users/{quote(user, safe='')}",
            headers={"Authorization": f"token {self.token}"},
        )
        answer = await AsyncHTTPClient().fetch(request)
        return frozenset(json.loads(answer.body).get("groups") or ())

    async def gpu_windows(self, pod: str, metric: tuple[str, float]) -> dict[float, bool]:
        """For each look-back window with samples: were all the pod's GPUs under the threshold?
        A Prometheus that does not answer gives no GPU signal (activity rules only)."""
        found: dict[float, bool] = {}
        for window in rules.gpu_windows(self.limits):
            query = urlencode({"query": gpu_query(self.namespace, pod, window, metric)})
            try:
                answer = await AsyncHTTPClient().fetch(
                    f"{self.prometheus_url.rstrip('/')}/api/v1/query?{query}"
                )
            except (HTTPClientError, OSError) as error:
                log.warning(
                    "Prometheus did not answer (%s): GPU rule skipped", type(error).__name__
                )
                return {}
            result = json.loads(answer.body)["data"]["result"]
            if result:
                found[window] = float(result[0]["value"][1]) < self.threshold
        return found
