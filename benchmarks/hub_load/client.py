"""One simulated user, as a browser and a script would drive the hub: the demo login form, the
spawn form, its POST, the REST API until the server is ready, a stop; perhaps one job submitted
to the job service through the hub's proxy. Every request is timed and kept by kind."""

from __future__ import annotations

import asyncio
import html
import json
import re
import time
from dataclasses import dataclass, field

import aiohttp

# The CPU-only server of the form (the catalog's `cpu` accelerator, its small size).
SPAWN_FORM = {"accelerator": "cpu", "size--cpu": "small"}
JOB = {"name": "load", "command": ["python", "-c", "print('hello')"]}
PAGES = ("login form", "login", "spawn form", "spawn post", "spawn pending")
POLL_S = 1.0
READY_LIMIT_S = 600.0
# Tries per user for a spawn that failed (a 429 is waited out and tried again, not counted here).
SPAWN_TRIES = 3
RETRY_PAUSE_S = 10.0  # before trying a failed spawn again, as a person would


@dataclass
class Request:
    kind: str
    seconds: float
    status: int
    phase: str


@dataclass
class Outcome:
    """What happened to one user."""

    user: str
    ready: bool = False
    failures: list[str] = field(default_factory=list)  # failed spawns, each retried
    throttled: list[float] = field(default_factory=list)  # Retry-After of each 429
    spawn_wait_s: float = 0.0  # first spawn POST to ready, retries and waits included
    job: int | None = None  # the submission's final status, if the user submitted one
    job_refusal: str = ""  # the service's message when that status is not 201
    error: str = ""


def refusal_message(body: str) -> str:
    """The service's error message (its JSON `message`), else the body's start."""
    try:
        return str(json.loads(body)["message"])
    except (ValueError, KeyError, TypeError):
        return body[:200]


class Recorder:
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.phase = "baseline"

    async def timed(
        self, kind: str, session: aiohttp.ClientSession, method: str, url: str, **kwargs
    ) -> tuple[int, str, dict]:
        """(status, body, headers) of one request; status 0 for no answer at all."""
        started = time.perf_counter()
        try:
            async with session.request(method, url, allow_redirects=False, **kwargs) as answer:
                body = await answer.text()
                status, headers = answer.status, dict(answer.headers)
        except (TimeoutError, aiohttp.ClientError) as error:
            status, body, headers = 0, repr(error), {}
        self.requests.append(Request(kind, time.perf_counter() - started, status, self.phase))
        return status, body, headers


class User:
    def __init__(
        self, name: str, hub_url: str, password: str, admin_token: str, recorder: Recorder
    ) -> None:
        self.name = name
        self.url = hub_url
        self.password = password
        self.admin = {"Authorization": f"token {admin_token}"}
        self.rec = recorder
        self.outcome = Outcome(name)
        self.token_headers: dict[str, str] = {}
        self.poll = False  # poll the user's model until ready, not the progress stream

    async def login(self, session: aiohttp.ClientSession) -> None:
        status, page, _ = await self.rec.timed(
            "login form", session, "GET", f"{self.url}/hub/login"
        )
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page)
        if status != 200 or not xsrf:
            raise RuntimeError(f"login form: {status}")
        form = {"_xsrf": xsrf[1], "username": self.name, "password": self.password}
        status, _, _ = await self.rec.timed(
            "login", session, "POST", f"{self.url}/hub/login", data=form
        )
        if status != 302:
            raise RuntimeError(f"login: {status}")
        # A script's token, made with the admin's (what `aiinfn` is given after a login).
        status, body, _ = await self.rec.timed(
            "token",
            session,
            "POST",
            f"{self.url}/hub/api/users/{self.name}/tokens",
            json={"note": "load"},
            headers=self.admin,
        )
        if status != 201:
            raise RuntimeError(f"token: {status}")
        self.token_headers = {"Authorization": f"token {json.loads(body)['token']}"}

    async def post_form(self, session: aiohttp.ClientSession) -> tuple[int, dict]:
        status, page, _ = await self.rec.timed(
            "spawn form", session, "GET", f"{self.url}/hub/spawn"
        )
        action = re.search(r'id="spawn_form"\s+action="([^"]+)"', page)
        if status != 200 or not action:
            raise RuntimeError(f"spawn form: {status}")
        status, _, headers = await self.rec.timed(
            "spawn post", session, "POST", self.url + html.unescape(action[1]), data=SPAWN_FORM
        )
        if status == 302:
            await self.rec.timed("spawn pending", session, "GET", self.url + headers["Location"])
        return status, headers

    async def server(self, session: aiohttp.ClientSession) -> tuple[int, dict | None]:
        """(status, the default server's model or None when the user has none)."""
        status, body, _ = await self.rec.timed(
            "user model",
            session,
            "GET",
            f"{self.url}/hub/api/users/{self.name}",
            headers=self.token_headers,
        )
        return status, json.loads(body)["servers"].get("") if status == 200 else None

    async def follow_progress(self, session: aiohttp.ClientSession) -> str:
        """What the spawn-pending page does: the progress event stream until ready or failed
        ("ready", else why not). Its latency is the time to the stream's headers."""
        url = f"{self.url}/hub/api/users/{self.name}/server/progress"
        headers = {**self.token_headers, "Accept": "text/event-stream"}
        started = time.perf_counter()
        try:
            async with session.get(
                url, headers=headers, timeout=aiohttp.ClientTimeout(total=READY_LIMIT_S)
            ) as answer:
                seconds = time.perf_counter() - started
                self.rec.requests.append(
                    Request("progress", seconds, answer.status, self.rec.phase)
                )
                if answer.status != 200:
                    return f"progress {answer.status}"
                async for line in answer.content:
                    event = json.loads(line[5:]) if line.startswith(b"data:") else {}
                    if event.get("ready") or event.get("failed"):
                        return "ready" if event.get("ready") else "spawn failed"
        except (TimeoutError, aiohttp.ClientError) as error:
            return f"progress: {error!r}"
        return "progress ended"

    async def wait_ready(self, session: aiohttp.ClientSession) -> str:
        """ "ready", or why not: the server gone without being ready (a failed spawn), or the
        limit reached. The progress stream, or the user's model polled each POLL_S."""
        if not self.poll:
            return await self.follow_progress(session)
        deadline = time.monotonic() + READY_LIMIT_S
        while time.monotonic() < deadline:
            status, model = await self.server(session)
            if status == 200 and model is None:
                return "spawn failed"
            if model and model.get("ready"):
                return "ready"
            await asyncio.sleep(POLL_S)
        return "not ready in time"

    async def spawn(self, session: aiohttp.ClientSession) -> bool:
        """The form posted until the server is ready: each 429 waited out (its Retry-After),
        each failed spawn tried again, SPAWN_TRIES times in all."""
        started, tries = time.perf_counter(), 0
        while tries < SPAWN_TRIES:
            status, headers = await self.post_form(session)
            if status == 429:
                wait = float(headers.get("Retry-After") or 0)
                self.outcome.throttled.append(wait)
                await asyncio.sleep(wait or POLL_S)
                continue
            tries += 1
            result = await self.wait_ready(session) if status == 302 else f"spawn post {status}"
            if result == "ready":
                self.outcome.spawn_wait_s = time.perf_counter() - started
                return True
            self.outcome.failures.append(result)
            await asyncio.sleep(RETRY_PAUSE_S if tries < SPAWN_TRIES else 0)
        return False

    async def stop(self, session: aiohttp.ClientSession) -> None:
        """Stop through the REST API with the user's token; wait until the server is gone."""
        url = f"{self.url}/hub/api/users/{self.name}/server"
        status, _, _ = await self.rec.timed(
            "stop", session, "DELETE", url, headers=self.token_headers
        )
        if status not in (202, 204):
            raise RuntimeError(f"stop: {status}")
        deadline = time.monotonic() + READY_LIMIT_S
        while time.monotonic() < deadline:
            status, model = await self.server(session)
            if status == 200 and model is None:
                return
            await asyncio.sleep(POLL_S)
        raise RuntimeError("stop: the server never went")

    async def submit(self, session: aiohttp.ClientSession) -> None:
        """One small CPU job through the hub's proxy; a 429 waited out (Retry-After)."""
        body = {**JOB, "idempotency_key": f"load-{self.name}"}
        for _ in range(SPAWN_TRIES):
            status, answer, headers = await self.rec.timed(
                "job submit",
                session,
                "POST",
                f"{self.url}/services/jobs/api/jobs",
                json=body,
                headers=self.token_headers,
            )
            self.outcome.job = status
            if status != 429:
                if status != 201:
                    self.outcome.job_refusal = refusal_message(answer)
                return
            await asyncio.sleep(float(headers.get("Retry-After") or POLL_S))

    async def run(self, connector: aiohttp.BaseConnector, hold_s: float, job: bool) -> Outcome:
        """Log in, (submit a job meanwhile,) spawn, keep the server `hold_s`, stop."""
        jar = aiohttp.CookieJar(unsafe=True)  # unsafe: the hub's cookies come from 127.0.0.1
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(
            connector=connector, connector_owner=False, cookie_jar=jar, timeout=timeout
        ) as session:
            try:
                await self.login(session)
                submission = asyncio.create_task(self.submit(session)) if job else None
                self.outcome.ready = await self.spawn(session)
                if self.outcome.ready:
                    await asyncio.sleep(hold_s)
                    await self.stop(session)
                if submission:
                    await submission
            except RuntimeError as error:
                self.outcome.error = str(error)
        return self.outcome
