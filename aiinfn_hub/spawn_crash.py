"""A crash-looping server's error: the failed container's exit and the end of its log, with what
the hub holds for the user masked (podfailure.py decides and cleans; this reads the log)."""

from __future__ import annotations

import asyncio

import aiohttp
from kubernetes_asyncio.client.rest import ApiException
from kubespawner import KubeSpawner

from . import k8s, podfailure
from .errors import UserError

# A failed container's log: what is read (the tail of crash_log_lines lines) and what is shown.
CRASH_LOG_READ_BYTES = 64 * 1024
CRASH_LOG_BYTES = 4 * 1024


async def crash_error(spawner: KubeSpawner, crash: podfailure.Crash) -> UserError:
    """The failed container's exit and last log lines, with what we hold for the user masked.
    `spawner` is the AiInfnSpawner whose pod crashed (its crash_log_lines, token, auth_state)."""
    secrets = podfailure.secret_values(spawner.api_token, await spawner.user.get_auth_state())
    excerpt = None
    if spawner.crash_log_lines:
        log = await container_log(spawner, crash.container)
        if log is not None:
            excerpt = podfailure.log_excerpt(log, secrets, spawner.crash_log_lines, CRASH_LOG_BYTES)
    message = podfailure.user_message(crash, excerpt, secrets, show_log=spawner.crash_log_lines > 0)
    detail = (
        f"container {crash.container!r} ended with exit code {crash.exit_code} "
        f"({crash.reason or 'no reason'}) after {crash.restarts} restart(s)"
    )
    return UserError(message, reason="crash", log_detail=detail, status=500)


async def container_log(spawner: KubeSpawner, container: str) -> str | None:
    """The end of the container's latest log (pods/log), or None if it cannot be read."""
    read = k8s.call_text(
        spawner.api.read_namespaced_pod_log(
            spawner.pod_name,
            spawner.namespace,
            container=container,
            tail_lines=spawner.crash_log_lines,
            limit_bytes=CRASH_LOG_READ_BYTES,
            _preload_content=False,
        )
    )
    try:
        return await asyncio.wait_for(read, spawner.k8s_api_request_timeout)
    except ApiException as error:
        spawner.log.warning(
            "Could not read the log of %s (%s): %s %s",
            spawner._log_name,
            container,
            error.status,
            error.reason,
        )
    except (TimeoutError, aiohttp.ClientError) as error:
        spawner.log.warning(
            "Could not read the log of %s (%s): %r", spawner._log_name, container, error
        )
    return None
