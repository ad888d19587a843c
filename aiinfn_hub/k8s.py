"""The one Kubernetes access layer: configuration and clients, raw calls to plain JSON with one
error mapping, and the one backoff policy (the list-then-watch is k8s_watch.py)."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import yaml
from kubernetes_asyncio import client, config, utils
from kubernetes_asyncio.client.rest import ApiException

STRICT = "Strict"
"""Every create, replace and patch passes ``field_validation=STRICT``: a misspelled field is
refused by the API server instead of silently dropped."""


REQUEST_TIMEOUT = aiohttp.ClientTimeout(sock_connect=10, sock_read=60)
"""The timeout of a call that names none. kubernetes_asyncio's own default is no timeout at all:
a call to an API server that took the connection and never answers would wait forever (a job
submission held open, its handler never ending)."""


class ApiClient(client.ApiClient):
    """kubernetes_asyncio's ApiClient, every call bounded by REQUEST_TIMEOUT unless it passes
    its own `_request_timeout` (the watches do: they read for minutes)."""

    def request(self, *args: Any, _request_timeout: Any = None, **kwargs: Any) -> Any:
        timeout = _request_timeout or REQUEST_TIMEOUT
        return super().request(*args, _request_timeout=timeout, **kwargs)


async def api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """An ApiClient from kubeconfig (or $KUBECONFIG), else the in-cluster service account."""
    path = kubeconfig or os.environ.get("KUBECONFIG")
    configuration = client.Configuration()
    if path:
        await config.load_kube_config(config_file=path, client_configuration=configuration)
    else:
        config.load_incluster_config(client_configuration=configuration)
    return ApiClient(configuration)


async def apply_objects(api: client.ApiClient, path: str | os.PathLike) -> None:
    """Server-side apply every object of a YAML file (idempotent: safe to run at every start)."""
    with open(path, encoding="utf-8") as stream:
        documents = [d for d in yaml.safe_load_all(stream) if d]
    for document in documents:
        # A fresh list per call: the dynamic client appends its own parameters to it.
        await utils.create_from_yaml_single_item(
            api, document, apply=True, query_params=[("fieldValidation", STRICT)]
        )


# -- raw calls: `_preload_content=False`, plain JSON, no model classes ---------------------------


class ApiError(ApiException):
    """A refused raw call, or an ERROR watch event: the status and the API server's message.

    A kubernetes_asyncio ApiException (callers catch that one class); `message` is the server's
    own words, at most 300 characters, for logs and for refusals the user caused."""

    def __init__(self, status: int | None, message: str, reason: str | None = None) -> None:
        super().__init__(status=status, reason=reason)
        self.message = message[:300]
        self.body = json.dumps({"message": self.message}).encode()

    def __str__(self) -> str:
        return f"{self.status}: {self.message}"


class ResourceExpired(ApiError):
    """410 Gone: the resourceVersion or continue token asked for is no longer served (relist)."""


def api_error(status: int | None, message: str, reason: str | None = None) -> ApiError:
    """The error for a status: `ResourceExpired` for 410, else `ApiError`."""
    kind = ResourceExpired if status == 410 else ApiError
    return kind(status, message, reason)


def status_message(body: bytes | str, fallback: str = "") -> str:
    """The `message` of a Status body, else the body itself (trimmed), else the fallback."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    try:
        message = json.loads(text).get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or text.strip() or fallback)[:300]


async def call_raw(pending: Awaitable[Any]) -> aiohttp.ClientResponse:
    """The open response of a raw call (a stream to read, then close); `ApiError` for non-2xx.

    With `_preload_content=False` kubernetes_asyncio does not raise on errors: this does."""
    response = await pending
    if 200 <= response.status < 300:
        return response
    try:
        body = await response.read()
    finally:
        response.close()
    raise api_error(response.status, status_message(body, response.reason or ""), response.reason)


async def call_bytes(pending: Awaitable[Any]) -> bytes:
    """The whole body of a raw call; `ApiError` for non-2xx."""
    response = await call_raw(pending)
    try:
        return await response.read()
    finally:
        response.release()


async def call_json(pending: Awaitable[Any]) -> Any:
    """The body of a raw call as JSON ({} when empty); `ApiError` for non-2xx."""
    body = await call_bytes(pending)
    return json.loads(body) if body else {}


async def call_json_or_none(pending: Awaitable[Any]) -> Any:
    """The body of a raw read as JSON; None when the object does not exist (404)."""
    try:
        return await call_json(pending)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


async def call_text(pending: Awaitable[Any]) -> str:
    """The body of a raw call as text (a pod log: bytes that are not UTF-8 replaced)."""
    return (await call_bytes(pending)).decode(errors="replace")


# -- retries --------------------------------------------------------------------------------------

TRANSIENT = (TimeoutError, aiohttp.ClientError, OSError)
"""What a call to the API server raises when the server or the network failed, not the call."""


def backoff_delay(
    attempt: int, base: float = 0.5, cap: float = 30.0, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait before retry number `attempt` (1, 2, ...): exponential, capped, with
    jitter over its upper half so a restarted API server is not hit by every client at once."""
    ceiling = min(cap, base * 2 ** min(max(attempt, 1) - 1, 32))
    return ceiling / 2 + rand() * ceiling / 2


def retry_after(error: BaseException, default: float = 1.0, cap: float = 30.0) -> float:
    """Seconds a throttled call (429) asks to wait (its Retry-After, in seconds), else
    `default`; never more than `cap`, never less than 0."""
    headers = getattr(error, "headers", None) or {}
    try:
        seconds = float(headers.get("Retry-After", default))
    except (TypeError, ValueError):
        seconds = default
    return min(max(seconds, 0.0), cap)


def unavailable(error: BaseException) -> str | None:
    """Why the API server could not act on a call right now (it throttled or failed it, or the
    connection broke): a short detail for the log, never the response body. None for a refusal
    of the call itself (4xx other than 429), for a timeout (whoever waited says what for), and
    for any other error."""
    if isinstance(error, ApiException):
        status = error.status or 0
        return f"{status} {error.reason}" if status == 429 or status >= 500 else None
    if isinstance(error, TRANSIENT) and not isinstance(error, TimeoutError):
        return f"{type(error).__name__}: {error}"[:300]
    return None
