"""The usage service through a real JupyterHub on the dev cluster (tokens, OAuth, the proxy's
route) and a real PostgreSQL seeded through the ledger: each figure to the second, a user never
sees another's usage, an admin sees everyone's and downloads CSV, every odd parameter is a
4xx, a database that cannot be reached a 503 that shows no URL, and the page in a real browser
with the hub's navigation bar.

The service runs as its own process with the environment a hub gives a managed service (and
the ledger's URL, as 56-usage.py passes it) and a service token with no role: it needs no hub
scope. Users reach it by the role line the `user` role needs (access:services!service=usage).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiinfn_dev.devcluster.processes import free_port
from psycopg import AsyncConnection
from selenium.webdriver.common.by import By

from aiinfn_hub.accounting import ledger, quotas, settings
from aiinfn_hub.accounting.events import Allocation, AllocationEvent
from tests import service_process
from tests.hub import Hub, hub_in_namespace
from tests.postgres import Postgres, create_database

pytestmark = pytest.mark.integration

PREFIX = "/services/usage/"
PASSWORD = "usage-secret-" + secrets.token_hex(4)
USERS = {
    "alice": {"groups": ["cms-ml"]},
    "bob": {"groups": []},
    "ada": {"admin": True, "groups": []},
}
FORMULA_USER = '=HYPERLINK("http://x","a,b")'
RANGE = "start=2026-11-02&end=2026-11-04"
QUOTAS = {
    "alice-t4": {
        "scope": "user",
        "subject": "alice",
        "model": "t4",
        "period": "month",
        "hours": 100,
    },
    "cms-ml-all": {"scope": "project", "subject": "cms-ml", "period": "month", "hours": 10},
}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def interval(uid: str, allocation: tuple, start: datetime, end: datetime) -> list[AllocationEvent]:
    held = Allocation(uid, *allocation)
    return [AllocationEvent(held, "start", start), AllocationEvent(held, "end", end)]


def seed(now: datetime) -> tuple[list[AllocationEvent], int]:
    """The ledger's events, and the seconds of alice's T4 work this month (for the quotas)."""
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    this_month = min(3600, int((now - month).total_seconds()) - 120)
    if this_month < 1:
        pytest.skip("too close to the start of a month for this month's seeded use")
    events = [
        # 2 A100s over midnight: 7200 s on 11-02, 5415 s on 11-03.
        *interval(
            "a-1",
            ("alice", "", "a100", "notebook", "", 2, 4000),
            at("2026-11-02T22:00:00"),
            at("2026-11-03T01:30:15"),
        ),
        *interval(
            "a-2",
            ("alice", "cms-ml", "t4", "batch", "", 1, 1000),
            at("2026-11-03T10:00:00"),
            at("2026-11-03T11:02:03"),
        ),
        *interval(
            "a-3",
            ("alice", "cms-ml", "t4", "offloaded", "infn-t1-htcondor", 1, 500),
            at("2026-11-04T00:00:00"),
            at("2026-11-04T00:10:00"),
        ),
        *interval(
            "b-1",
            ("bob", "", "", "notebook", "", 0, 2000),
            at("2026-11-03T12:00:00"),
            at("2026-11-03T12:30:00"),
        ),
        *interval(
            "f-1",
            (FORMULA_USER, "+evil", "t4", "batch", "", 1, 100),
            at("2026-11-04T01:00:00"),
            at("2026-11-04T01:00:59"),
        ),
        # Outside the range: this month's T4 work, which the quotas count.
        *interval(
            "a-4",
            ("alice", "cms-ml", "t4", "batch", "", 1, 1000),
            month,
            month + timedelta(seconds=this_month),
        ),
    ]
    return events, this_month


@dataclass
class ServiceProcess:
    """The usage service, with what a hub gives a managed service; stopped by pid."""

    tmp: Path
    hub_url: str
    port: int
    token: str
    database_url: str
    name: str = "usage-service"
    args: tuple[str, ...] = ()  # command-line settings
    process: subprocess.Popen | None = None

    def environment(self) -> dict[str, str]:
        extra = {settings.URL_ENV: self.database_url}
        drop = ("JUPYTERHUB_", "AIINFN_")
        return service_process.environment(
            "usage", self.token, self.hub_url, self.port, PREFIX, drop, **extra
        )

    def answers(self) -> bool:
        return service_process.answers(self.port, PREFIX)

    def start(self) -> None:
        argv = [sys.executable, "-m", "aiinfn_hub.services.usage"]
        argv += ["--hub-config", str(self.tmp / "jupyterhub_config.py"), *self.args]
        self.process = service_process.start(
            argv, self.tmp, self.environment(), self.log_path, self.port, PREFIX
        )

    def stop(self) -> None:
        service_process.stop(self.process)

    @property
    def log_path(self) -> Path:
        return self.tmp / f"{self.name}.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def hub_lines(port: int, token: str) -> list[str]:
    """The usage service as an external service (no role: it needs no hub scope), the role
    line users need to reach it, the quotas."""
    return [
        *service_process.external_service_lines("usage", port, token),
        f"c.AiInfnAccounting.quotas = {QUOTAS!r}",
        "c.AiInfnUsage.rate_limit = 100.0",
        "c.AiInfnUsage.rate_limit_burst = 100",
    ]


@dataclass
class Env:
    hub: Hub
    service: ServiceProcess
    this_month: int
    tokens: dict[str, str] = field(default_factory=dict)

    def call(self, user: str | None, path: str) -> tuple[int, Any, Any]:
        """(status, body: JSON or text, headers) of a GET through the hub's proxy."""
        headers = {"Authorization": f"token {self.tokens[user]}"} if user else {}
        request = urllib.request.Request(f"{self.hub.url}{PREFIX}{path}", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, raw, answer_headers = response.status, response.read(), response.headers
        except urllib.error.HTTPError as error:
            status, raw, answer_headers = error.code, error.read(), error.headers
        text = raw.decode()
        if answer_headers.get("Content-Type", "").startswith("application/json"):
            return status, json.loads(text), answer_headers
        return status, text, answer_headers

    async def get(self, user: str | None, path: str) -> tuple[int, Any, Any]:
        return await asyncio.to_thread(self.call, user, path)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env(devcluster, api_client, postgres: Postgres, tmp_path_factory):
    kubeconfig, _ = devcluster
    tmp = tmp_path_factory.mktemp("usage")
    name = create_database(postgres)
    ledger.upgrade(postgres.url(name))
    events, this_month = seed(datetime.now(UTC))
    async with await AsyncConnection.connect(postgres.dsn(name)) as connection:
        await ledger.insert(connection, events)
        await connection.commit()
    url = postgres.url(name).replace("@", f":{PASSWORD}@", 1)
    port, token = free_port(), secrets.token_hex(32)
    hub_env = {settings.URL_ENV: url}  # the hub runs accounting on the same ledger
    lines = hub_lines(port, token)
    async with hub_in_namespace(api_client, kubeconfig, tmp, USERS, {}, lines, hub_env) as hub:
        service = ServiceProcess(tmp, hub.url, port, token, url)
        try:
            await asyncio.to_thread(service.start)
            environment = Env(hub, service, this_month)
            for user in USERS:
                status, body = await asyncio.to_thread(
                    hub.request, "POST", f"/users/{user}/tokens", {"note": "usage tests"}
                )
                assert status == 201, body
                environment.tokens[user] = body["token"]
            yield environment
        finally:
            service.stop()
        assert PASSWORD not in service.log() and PASSWORD not in hub.log()


def daily(body: dict) -> list[tuple]:
    return [
        (
            r["day"],
            r["user"],
            r["project"],
            r["model"],
            r["kind"],
            r["site"],
            r["accelerator_seconds"],
            r["cpu_millicore_seconds"],
        )
        for r in body["daily"]
    ]


ALICE_DAILY = [
    ("2026-11-02", "alice", "", "a100", "notebook", "", 2 * 7200, 4000 * 7200),
    ("2026-11-03", "alice", "", "a100", "notebook", "", 2 * 5415, 4000 * 5415),
    ("2026-11-03", "alice", "cms-ml", "t4", "batch", "", 3723, 1000 * 3723),
    ("2026-11-04", "alice", "cms-ml", "t4", "offloaded", "infn-t1-htcondor", 600, 500 * 600),
]
BOB_DAILY = [("2026-11-03", "bob", "", "", "notebook", "", 0, 2000 * 1800)]
FORMULA_DAILY = [("2026-11-04", FORMULA_USER, "+evil", "t4", "batch", "", 59, 100 * 59)]


async def test_a_user_sees_their_own_usage_to_the_second_and_their_quotas(env: Env):
    status, body, _ = await env.get("alice", f"api/usage?{RANGE}")
    assert status == 200, body
    assert (body["user"], body["all"], body["start"], body["end"]) == (
        "alice",
        False,
        "2026-11-02",
        "2026-11-04",
    )
    assert body["days"] == ["2026-11-02", "2026-11-03", "2026-11-04"]
    assert daily(body) == ALICE_DAILY
    a100 = next(t for t in body["totals"] if t["model"] == "a100")
    assert (a100["accelerator_seconds"], a100["accelerator_hours"]) == (25230, 7.008333)
    assert (a100["cpu_millicore_seconds"], a100["cpu_hours"]) == (50_460_000, 14.016667)
    used = env.this_month / 3600
    standings = {(q["scope"], q["subject"], q["model"]): q for q in body["quotas"]}
    assert set(standings) == {("user", "alice", "t4"), ("project", "cms-ml", None)}
    mine = standings[("user", "alice", "t4")]
    assert (mine["limit_hours"], mine["used_hours"]) == (100.0, round(used, 6))
    assert mine["remaining_hours"] == round(100 - used, 6)
    assert standings[("project", "cms-ml", None)]["remaining_hours"] == round(10 - used, 6)
    start, end = quotas.period_bounds("month", datetime.now(UTC))
    assert (mine["period_start"], mine["period_end"]) == (start.isoformat(), end.isoformat())
    # The project filter and the user's own name change nothing else.
    status, body, _ = await env.get("alice", f"api/usage?{RANGE}&user=alice&project=cms-ml")
    assert daily(body) == ALICE_DAILY[2:]


async def test_a_user_never_sees_anothers_usage(env: Env):
    for path in (f"api/usage?{RANGE}&user=bob", f"api/usage?{RANGE}&all=1", "api/usage.csv?all=1"):
        status, body, _ = await env.get("alice", path)
        assert (status, body["message"]) == (
            403,
            "you may see your own usage only; admins see everyone's",
        ), path
    status, body, headers = await env.get(None, f"api/usage?{RANGE}")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer"), body
    status, body, _ = await env.get("bob", f"api/usage?{RANGE}")
    assert daily(body) == BOB_DAILY and body["quotas"] == []


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("start=2025-01-01&end=2026-11-04", "a range of at most 366 days, please"),
        ("start=2026-02-30", "'start' must be a date, YYYY-MM-DD (UTC)"),
        ("end=2026-11-04T00:00:00", "'end' must be a date, YYYY-MM-DD (UTC)"),
        ("user=%ff", "'user' is not UTF-8 text"),
        ("user=a%00b", "'user' must be 1 to 64 printable ASCII characters"),
        ("project=" + "p" * 64, "'project' must be 1 to 63 printable ASCII characters"),
        ("start=2026-11-02&start=2026-11-03", "give 'start' at most once"),
        ("sort=day", "unknown parameter 'sort'"),
        ("format=pdf", "'format' must be json or csv"),
        ("all=yes&user=bob", "give either 'user' or 'all', not both"),
    ],
)
async def test_every_odd_parameter_is_a_400_with_the_reason(env: Env, query: str, message: str):
    status, body, _ = await env.get("ada", f"api/usage?{query}")
    assert status == 400 and body["message"].startswith(message), body


async def test_an_admin_sees_everyone_and_downloads_csv(env: Env):
    assert (await env.get(None, "health"))[:2] == (200, {"status": "ok"})
    status, body, _ = await env.get("ada", "api/")
    assert (status, body["user"], body["admin"]) == (200, "ada", True)
    status, body, _ = await env.get("ada", f"api/usage?{RANGE}&all=1")
    assert status == 200 and body["user"] is None and body["all"] is True
    assert sorted(daily(body)) == sorted(ALICE_DAILY + BOB_DAILY + FORMULA_DAILY)
    # Every user: the quotas of the projects of the usage in the range (no user's).
    assert [(q["scope"], q["subject"]) for q in body["quotas"]] == [("project", "cms-ml")]
    status, body, _ = await env.get("ada", f"api/usage?{RANGE}&user=bob")
    assert daily(body) == BOB_DAILY
    # Another user's quotas: theirs, and those of the projects of their usage in the range.
    status, body, _ = await env.get("ada", f"api/usage?{RANGE}&user=alice")
    assert daily(body) == ALICE_DAILY
    assert sorted((q["scope"], q["subject"]) for q in body["quotas"]) == [
        ("project", "cms-ml"),
        ("user", "alice"),
    ]
    status, body, _ = await env.get("ada", f"api/usage?{RANGE}&all=1&project=cms-ml")
    assert daily(body) == ALICE_DAILY[2:]
    [project] = body["quotas"]
    assert (project["subject"], project["used_hours"]) == (
        "cms-ml",
        round(env.this_month / 3600, 6),
    )
    status, body, _ = await env.get("ada", f"api/usage?{RANGE}&all=1&project=%2Bevil")
    assert daily(body) == FORMULA_DAILY
    status, text, headers = await env.get("ada", f"api/usage.csv?{RANGE}&all=1")
    assert status == 200 and headers["Content-Type"] == "text/csv; charset=utf-8"
    assert headers["Content-Disposition"] == (
        'attachment; filename="usage-all-2026-11-02-2026-11-04.csv"'
    )
    lines = list(csv.reader(io.StringIO(text)))
    assert lines[0][:2] == ["day", "user"]
    assert ["2026-11-03", "bob", "", "", "notebook", "", "0", "0.0", "3600000", "1.0"] in lines
    assert [
        "2026-11-04",
        "'" + FORMULA_USER,
        "'+evil",
        "t4",
        "batch",
        "",
        "59",
        "0.016389",
        "5900",
        "0.001639",
    ] in lines
    assert '"\'=HYPERLINK(""http://x"",""a,b"")"' in text
    status, same, _ = await env.get("ada", f"api/usage?{RANGE}&all=1&format=csv")
    assert same == text


async def test_a_database_out_of_reach_is_a_503_that_shows_no_url(env: Env):
    port, token = free_port(), env.service.token  # the hub knows the service by its token
    closed = f"postgresql://usage:{PASSWORD}@127.0.0.1:{free_port()}/nowhere"
    away = ServiceProcess(env.service.tmp, env.hub.url, port, token, closed, name="usage-away")
    await asyncio.to_thread(away.start)
    try:
        # Straight to the process: the hub knows the other one by this prefix.
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{PREFIX}api/usage",
            headers={"Authorization": f"token {env.tokens['alice']}"},
        )
        with pytest.raises(urllib.error.HTTPError) as raised:
            await asyncio.to_thread(urllib.request.urlopen, request, timeout=60)
        body = raised.value.read().decode()
        assert raised.value.code == 503 and PASSWORD not in body
        assert json.loads(body)["message"] == (
            "the usage records cannot be read right now; try again in a minute"
        )
        with pytest.raises(urllib.error.HTTPError) as unhealthy:
            await asyncio.to_thread(
                urllib.request.urlopen, f"http://127.0.0.1:{port}{PREFIX}health", timeout=60
            )
        assert unhealthy.value.code == 503
    finally:
        away.stop()
    assert "OperationalError" in away.log() and PASSWORD not in away.log()


def browse(env: Env, user: str) -> dict[str, Any]:
    """Log `user` in through the hub's form in Chromium, open the usage page (the service's
    OAuth login on the way) and read what it shows; an admin then picks bob."""
    from tests.browser import chrome, wait_for

    driver = chrome(env.service.tmp / f"chrome-{user}")
    try:
        driver.get(f"{env.hub.url}/hub/login")
        driver.find_element(By.ID, "username_input").send_keys(user)
        driver.find_element(By.ID, "password_input").send_keys(env.hub.password)
        driver.find_element(By.ID, "login_submit").click()
        wait_for(lambda: "/hub/login" not in driver.current_url, f"{user} to be logged in")
        driver.get(f"{env.hub.url}{PREFIX}?{RANGE}")
        wait_for(lambda: driver.find_elements(By.ID, "usage"), "the usage page")
        found = read_page(driver, user)
        if found["users"]:
            found["bob"] = pick_bob(driver, user)
        # Refused: another user's usage (a user), a date that is none (an admin).
        odd = "user=bob" if user == "alice" else "start=2026-02-30"
        driver.get(f"{env.hub.url}{PREFIX}?{odd}")
        error = wait_for(lambda: driver.find_elements(By.ID, "error"), "the error page")
        found["error"] = (error[0].text, bool(driver.find_elements(By.ID, "thenavbar")))
        return found
    finally:
        driver.quit()


def read_page(driver: Any, user: str) -> dict[str, Any]:
    from tests.browser import artifacts_dir

    driver.save_screenshot(str(artifacts_dir() / f"usage-{user}.png"))
    script = driver.execute_script
    theme = script("return document.documentElement.dataset.bsTheme")
    driver.find_element(By.ID, "dark-theme-toggle").click()  # the hub's own script, run
    return {
        "navbar": bool(driver.find_elements(By.CSS_SELECTOR, "nav.navbar #thenavbar")),
        "logout": bool(driver.find_elements(By.ID, "logout")),
        "themes": (theme, script("return document.documentElement.dataset.bsTheme")),
        "subject": driver.find_element(By.ID, "usage-subject").text,
        "charts": [
            (svg.get_attribute("aria-labelledby"), svg.size["width"])
            for svg in driver.find_elements(By.CSS_SELECTOR, "#usage svg.usage-chart")
        ],
        "bars": script(
            "return Array.from(document.querySelectorAll('svg.usage-chart rect title'))"
            ".map(t => t.textContent)"
        ),
        "styled": script("return document.querySelectorAll('#usage [style]').length"),
        "quotas": [r.text for r in driver.find_elements(By.CSS_SELECTOR, "#quotas tbody tr")],
        "csv": [a.get_attribute("href") for a in driver.find_elements(By.ID, "csv-link")],
        "users": [
            o.get_attribute("value") for o in driver.find_elements(By.CSS_SELECTOR, "#user option")
        ],
        "projects": [
            o.get_attribute("value")
            for o in driver.find_elements(By.CSS_SELECTOR, "#project option")
        ],
    }


def pick_bob(driver: Any, user: str) -> list[list[str]]:
    """An admin picks bob in the selector: bob's totals, cell by cell."""
    from tests.browser import artifacts_dir, wait_for

    driver.find_element(By.CSS_SELECTOR, "#user option[value='bob']").click()
    driver.find_element(By.CSS_SELECTOR, "#usage-form button[type=submit]").click()
    wait_for(
        lambda: "Usage of bob" in driver.find_element(By.ID, "usage-subject").text, "bob's usage"
    )
    driver.save_screenshot(str(artifacts_dir() / f"usage-{user}-bob.png"))
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#totals tbody tr'))"
        ".map(r => Array.from(r.cells).map(c => c.textContent.trim()))"
    )


async def test_the_page_in_a_real_browser_in_the_hubs_look(env: Env):
    alice = await asyncio.to_thread(browse, env, "alice")
    assert alice["navbar"] and alice["logout"], alice
    assert alice["themes"][0] != alice["themes"][1], alice["themes"]  # dark mode toggled
    assert alice["subject"].startswith("Your usage, 2026-11-02 to 2026-11-04 (UTC days)")
    assert [label for label, _ in alice["charts"]] == [
        "chart-1-title chart-1-desc",
        "chart-2-title chart-2-desc",
    ]
    assert all(width > 300 for _, width in alice["charts"]), alice["charts"]
    assert "2026-11-02, a100: 4.00 h" in alice["bars"]
    assert "2026-11-04, t4: 0.17 h" in alice["bars"]
    assert alice["styled"] == 0
    assert len(alice["quotas"]) == 2 and alice["csv"] == [] and alice["users"] == []
    ada = await asyncio.to_thread(browse, env, "ada")
    assert ada["navbar"] and ada["subject"].startswith("Your usage")
    assert ada["csv"] == [
        f"{env.hub.url}{PREFIX}api/usage.csv?start=2026-11-02&end=2026-11-04&user=ada"
    ]
    assert ada["users"] == ["", FORMULA_USER, "alice", "bob"]
    # The catalog's projects and the ledger's (the one catalog-less project of the seed).
    assert ada["projects"] == ["", "+evil", "cms-ml", "lhcb-flashsim", "qml"]
    assert ada["bob"] == [["—", "CPU only", "notebook", "local", "0.00", "1.00"]]
    # A refusal is an error page with the reason, in the hub's look too.
    assert alice["error"] == ("you may see your own usage only; admins see everyone's", True)
    assert ada["error"] == ("'start' must be a date, YYYY-MM-DD (UTC)", True)


def aiinfn(env: Env, user: str, *args: str) -> subprocess.CompletedProcess:
    """`aiinfn ...` as in the user's notebook terminal (their token, the service's URL)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
    environment.update(
        {"JUPYTERHUB_API_TOKEN": env.tokens[user], "AIINFN_USAGE_URL": env.hub.url + PREFIX}
    )
    return subprocess.run(
        [sys.executable, "-m", "aiinfn_hub.cli", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_aiinfn_usage_in_a_terminal(env: Env):
    window = ("--start", "2026-11-02", "--end", "2026-11-04")
    done = await asyncio.to_thread(aiinfn, env, "alice", "usage", *window)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:5] == [
        "alice's usage, 2026-11-02 to 2026-11-04 (UTC days)",
        "  a100 - notebook local: 7.01 accelerator-h, 14.02 CPU-h",
        "  t4 cms-ml batch local: 1.03 accelerator-h, 1.03 CPU-h",
        "  t4 cms-ml offloaded infn-t1-htcondor: 0.17 accelerator-h, 0.08 CPU-h",
        f"quota on user alice, t4, this month: {100 - env.this_month / 3600:.2f} of 100 h left"
        + lines[4][lines[4].index(" (resets") :],
    ]
    done = await asyncio.to_thread(aiinfn, env, "alice", "usage", "--all", "--csv")
    assert done.returncode == 1
    assert done.stderr.strip().endswith(
        "you may see your own usage only; admins see everyone's (HTTP 403)"
    )
    done = await asyncio.to_thread(aiinfn, env, "ada", "usage", "--user", "bob", "--csv", *window)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1] == "2026-11-03,bob,,,notebook,,0,0.0,3600000,1.0"


async def test_an_answer_past_the_row_limit_is_refused_not_cut(env: Env):
    port = free_port()
    small = ServiceProcess(
        env.service.tmp,
        env.hub.url,
        port,
        env.service.token,
        env.service.database_url,
        name="usage-small",
        args=("--AiInfnUsage.max_rows=4",),
    )
    await asyncio.to_thread(small.start)
    try:

        def get(query: str) -> tuple[int, dict]:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}{PREFIX}api/usage?{RANGE}&{query}",
                headers={"Authorization": f"token {env.tokens['ada']}"},
            )
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as error:
                return error.code, json.loads(error.read())

        status, body = await asyncio.to_thread(get, "user=alice")  # 4 rows: taken
        assert status == 200 and daily(body) == ALICE_DAILY
        status, body = await asyncio.to_thread(get, "all=1")  # 6 rows
        assert (status, body["message"]) == (
            400,
            "more than 4 rows; narrow the range, or pick a user or a project",
        )
    finally:
        small.stop()
