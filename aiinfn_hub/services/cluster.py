"""What the services that work on the cluster share (the job and backup services): a per-user
token bucket answered with 429 and Retry-After, a cluster that cannot be reached answered with
503 (its detail in the log only), /metrics for a hub token with read:metrics, and a public
/health asked of the API server at most once per HEALTH_CACHE_SECONDS however often it is
called."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from kubernetes_asyncio import client
from prometheus_client import CONTENT_TYPE_LATEST

from .. import k8s
from ..errors import UserError
from .base import HubUser, ServiceHandler, Unauthenticated
from .ratelimit import retry_after

log = logging.getLogger(__name__)
HEALTH_CACHE_SECONDS = 5.0
# When to try again after a 503 the API server gave no Retry-After for.
UNAVAILABLE_RETRY_SECONDS = 5.0
METRICS_SCOPE = "read:metrics"
_TOKEN = re.compile(r"(?:token|bearer)\s+(\S+)", re.IGNORECASE)


class RateLimited(UserError):
    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"too many requests; try again in {retry_after(seconds)} s",
            reason="rate-limited",
            status=429,
        )
        self.headers = {"Retry-After": retry_after(seconds)}


class ClusterUnavailable(UserError):
    """The cluster could not act on the request (throttled, failed, unreachable, too slow): try
    again after the API server's own Retry-After when it gave one, else a few seconds."""

    def __init__(self, detail: str, seconds: float) -> None:
        super().__init__(
            "the cluster cannot be reached right now; try again",
            reason="unavailable",
            log_detail=f"Kubernetes API: {detail}",
            status=503,
        )
        self.headers = {"Retry-After": retry_after(seconds)}


class ClusterHandler(ServiceHandler):
    """Authenticated, rate-limited (the application's `limiter` setting); a cluster that cannot
    be reached is a 503, not a 500."""

    def user(self) -> HubUser:
        caller = self.caller()
        wait = self.settings["limiter"].take(caller.name)
        if wait:
            raise RateLimited(wait)
        return caller

    def as_user_error(self, error: BaseException | None) -> UserError | None:
        # Throttled (429), failed (5xx), unreachable or too slow: the cluster, not the request.
        detail = k8s.unavailable(error) if error is not None else None
        if isinstance(error, asyncio.TimeoutError):
            detail = f"TimeoutError: {error}"
        if detail is not None:
            return ClusterUnavailable(detail, k8s.retry_after(error, UNAVAILABLE_RETRY_SECONDS))
        return super().as_user_error(error)


class MetricsHandler(ServiceHandler):
    """The service's metrics for Prometheus (the application's `metrics` setting: an object with
    `exposition()`): a hub token (Authorization: Bearer or token) whose scopes include
    read:metrics, as the hub's own /hub/metrics asks; no cookie, no user."""

    async def prepare(self) -> None:
        header = self.request.headers.get("Authorization", "")
        match = _TOKEN.fullmatch(header.strip())
        model = await self.hub_auth.user_for_token(match.group(1), sync=False) if match else None
        if model is None:
            raise Unauthenticated(self.settings.get("auth_realm", "jupyterhub"), bool(header))
        if METRICS_SCOPE not in (model.get("scopes") or ()):
            raise UserError(
                f"this token lacks the {METRICS_SCOPE} scope", reason="forbidden", status=403
            )

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(self.settings["metrics"].exposition())


class HealthHandler(ServiceHandler):
    """200 while the service can use the Kubernetes API, else 503; public, so it says no more."""

    async def prepare(self) -> None:
        pass

    async def get(self) -> None:
        healthy = await self.settings["health"]()
        self.write_json({"status": "ok" if healthy else "unavailable"}, 200 if healthy else 503)


class HealthCheck:
    """Whether the service's Kubernetes access works, asked of the API server (`probe`) at most
    once per HEALTH_CACHE_SECONDS however often /health is called (it is public)."""

    def __init__(self, probe: Callable[[], Awaitable[Any]]) -> None:
        self.probe = probe
        self.checked_at = float("-inf")
        self.healthy = False
        self._lock = asyncio.Lock()

    async def __call__(self) -> bool:
        async with self._lock:  # callers during a check wait for its answer
            if time.monotonic() - self.checked_at >= HEALTH_CACHE_SECONDS:
                self.healthy = await self._check()
                self.checked_at = time.monotonic()
        return self.healthy

    async def _check(self) -> bool:
        try:
            await self.probe()
        except Exception as error:  # any failure is "unhealthy"; only the log has the detail
            log.warning("Health check: Kubernetes API: %s: %s", type(error).__name__, error)
            return False
        return True


async def list_one_job(api_client: client.ApiClient, namespace: str) -> None:
    """A health probe: one cheap call that needs the service's credentials and its RBAC."""
    batch = client.BatchV1Api(api_client)
    await k8s.call_json(
        batch.list_namespaced_job(namespace, limit=1, _preload_content=False, _request_timeout=5)
    )
