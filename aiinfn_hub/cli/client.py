"""The services' REST APIs as `aiinfn` and the Snakemake executor call them: where each service
is (from the notebook's environment), the user's hub token, retries of what is safe to retry."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

URL_ENV = "AIINFN_JOBS_URL"
TOKEN_ENV = "JUPYTERHUB_API_TOKEN"
SERVICE_PATH = "services/jobs/"
BACKUP_URL_ENV = "AIINFN_BACKUP_URL"
BACKUP_SERVICE_PATH = "services/backup/"
USAGE_URL_ENV = "AIINFN_USAGE_URL"
USER_ENV = "JUPYTERHUB_USER"
# (environment variable, path under the hub, name in messages) of each area's service.
SERVICES = {
    "jobs": (URL_ENV, SERVICE_PATH, "job service"),
    "backup": (BACKUP_URL_ENV, BACKUP_SERVICE_PATH, "backup service"),
    "usage": (USAGE_URL_ENV, "services/usage/", "usage service"),
}
RETRIES = 3
TIMEOUT = 30
MAX_RETRY_WAIT = 30.0


class CliError(Exception):
    """A problem to print for the user (exit status 1)."""


def service_url(env: Mapping[str, str], area: str = "jobs") -> str:
    """The area's service's base URL (ending in '/') from the notebook's environment."""
    variable, path, what = SERVICES[area]
    explicit = env.get(variable)
    if explicit:
        return explicit.rstrip("/") + "/"
    public = env.get("JUPYTERHUB_PUBLIC_HUB_URL") or env.get("JUPYTERHUB_PUBLIC_URL")
    if public:
        parts = urllib.parse.urlsplit(public)
        base = (env.get("JUPYTERHUB_BASE_URL") or "/").rstrip("/") + "/"
        return f"{parts.scheme}://{parts.netloc}{base}{path}"
    raise CliError(
        f"cannot tell where the {what} is: set {variable} (your admins know it), or run this "
        "in a notebook terminal of a hub with a public URL"
    )


class Client:
    """A service's REST API with the user's hub token."""

    def __init__(self, url: str, token: str, what: str = "job service") -> None:
        self.url = url
        self.token = token
        self.what = what

    def call(
        self, method: str, path: str, body: Any = None, retry: bool = False, text: bool = False
    ) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            urllib.parse.urljoin(self.url, path),
            data=data,
            method=method,
            headers={
                "Authorization": f"token {self.token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        for attempt in range(RETRIES if retry else 1):
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                    raw = response.read()
                    return raw.decode() if text else json.loads(raw or b"{}")
            except urllib.error.HTTPError as error:
                message = _message(error)
                if retry and error.code in (429, 502, 503, 504) and attempt + 1 < RETRIES:
                    time.sleep(retry_wait(error.headers.get("Retry-After"), attempt))
                    continue
                raise CliError(f"{message} (HTTP {error.code})") from None
            except (urllib.error.URLError, OSError) as error:
                if retry and attempt + 1 < RETRIES:
                    time.sleep(1 + attempt)
                    continue
                raise CliError(f"cannot reach the {self.what} at {self.url}: {error}") from None
        raise AssertionError("unreachable")


def retry_wait(retry_after: str | None, attempt: int) -> float:
    """Seconds before trying again: the service's Retry-After (whole seconds) up to
    MAX_RETRY_WAIT, else 1 s more each attempt."""
    try:
        return min(max(float(retry_after or ""), 0.0), MAX_RETRY_WAIT)
    except ValueError:
        return 1.0 + attempt


def _message(error: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(error.read()).get("message"))
    except (ValueError, AttributeError):
        return error.reason or "error"
