"""A real OpenID provider for the tests: Keycloak from Maven Central, with an IAM-shaped realm.

`python -m tests.oidc_provider fetch` downloads the pinned distribution once (checked against
its SHA-512), unpacks it and pre-builds it (`kc.sh build`) into
~/.cache/aiinfn-hub/keycloak/ (AIINFN_KEYCLOAK_CACHE overrides); `./dev test` runs it before
pytest, and the `keycloak` fixture does the same if needed. The fixture runs Keycloak on
127.0.0.1 with an H2 database in the test's temporary folder (the cached distribution is only
read), and stops it by pid. Test modules make their realm with `make_realm` from
tests/oidc_realm.json and their own users, and log in through a hub with `browser_login`.
"""

from __future__ import annotations

import hashlib
import html.parser
import http.cookiejar
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiinfn_dev.devcluster.processes import free_port

KEYCLOAK_VERSION = "26.7.3"
KEYCLOAK_SHA512 = (
    "15c764765576eef267cf15cc5225a5826b5394a25a83d9bfa5b8544e4bbba690"
    "cb743c9d384200b93bb71ee4c4a328e1dd8c0a00f822fd3e6e154f14b1e47216"
)
MAVEN_URL = (
    "https://repo1.maven.org/maven2/org/keycloak/keycloak-quarkus-dist/{v}/"
    "keycloak-quarkus-dist-{v}.zip"
)
# Build-time options, baked into the cached distribution by `kc.sh build`.
BUILD_OPTIONS = ["--db=dev-file"]
REALM_TEMPLATE = Path(__file__).with_name("oidc_realm.json")
START_LIMIT = 240.0
# How long one admin call may go without an answer: a hang guard, not a speed check. Creating a
# realm takes 2 s on a quiet machine and has taken over 30 s beside the rest of the suite (load
# average 10 to 15 on 2 cores).
ADMIN_CALL_LIMIT = 180.0
# A reused admin token is renewed this many seconds before it expires.
TOKEN_RENEWAL_MARGIN = 15
# The state file of the Keycloak `serve` starts for a whole `./dev test` (in the folder given).
SHARED_STATE = "provider.json"


def cache_dir() -> Path:
    """AIINFN_KEYCLOAK_CACHE, else $XDG_CACHE_HOME/aiinfn-hub/keycloak (~/.cache by default)."""
    if os.environ.get("AIINFN_KEYCLOAK_CACHE"):
        return Path(os.environ["AIINFN_KEYCLOAK_CACHE"])
    return (
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aiinfn-hub" / "keycloak"
    )


def _stamp() -> str:
    return f"{KEYCLOAK_VERSION} {KEYCLOAK_SHA512[:16]} {' '.join(BUILD_OPTIONS)}"


def _extract(archive: Path, target: Path) -> None:
    """Unzip keeping the executable bits (zipfile drops them)."""
    with zipfile.ZipFile(archive) as zipped:
        for info in zipped.infolist():
            path = Path(zipped.extract(info, target))
            mode = info.external_attr >> 16
            if mode and not info.is_dir():
                path.chmod(mode & 0o777)


def install(cache: Path | None = None, log=print) -> Path:
    """The pre-built Keycloak home in the cache; downloaded and built the first time only."""
    cache = cache or cache_dir()
    home = cache / f"keycloak-{KEYCLOAK_VERSION}"
    if (home / ".aiinfn-built").is_file() and (home / ".aiinfn-built").read_text() == _stamp():
        return home
    if shutil.which("java") is None:
        raise RuntimeError("the tests' OpenID provider (Keycloak) needs Java 17 or later on PATH")
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="keycloak-", dir=cache))
    try:
        archive = staging / "keycloak.zip"
        url = MAVEN_URL.format(v=KEYCLOAK_VERSION)
        log(f"oidc provider: downloading Keycloak {KEYCLOAK_VERSION} from Maven Central (once)")
        digest = hashlib.sha512()
        with urllib.request.urlopen(url, timeout=60) as response, open(archive, "wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != KEYCLOAK_SHA512:
            raise RuntimeError(f"{url}: SHA-512 mismatch, refusing to use the download")
        _extract(archive, staging)
        archive.unlink()
        built = staging / f"keycloak-{KEYCLOAK_VERSION}"
        log("oidc provider: pre-building Keycloak (kc.sh build, once)")
        result = subprocess.run(
            [str(built / "bin" / "kc.sh"), "build", *BUILD_OPTIONS],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"kc.sh build failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
            )
        (built / ".aiinfn-built").write_text(_stamp())
        if home.exists():
            shutil.rmtree(home)
        built.rename(home)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return home


def _request(
    method: str,
    url: str,
    *,
    token: str | None = None,
    body: Any = None,
    form: dict | None = None,
    timeout: float = 30,
) -> tuple[int, Any]:
    headers = {}
    data = None
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
    elif body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read().decode()
            status, location = response.status, response.headers.get("Location")
    except urllib.error.HTTPError as error:
        status, text, location = error.code, error.read().decode(errors="replace"), None
    try:
        return status, json.loads(text) if text else location
    except json.JSONDecodeError:
        return status, text


class Keycloak:
    """One Keycloak process on 127.0.0.1; its data lives in `workdir`, the distribution is
    shared."""

    def __init__(self, distribution: Path, workdir: Path) -> None:
        self.distribution = distribution
        self.workdir = workdir
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.admin_password = secrets.token_urlsafe(18)
        self.log_path = workdir / "keycloak.log"
        self._token: tuple[str, float] = ("", 0.0)
        self._token_lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        home = self.workdir / "home"
        (home / "bin").mkdir(parents=True, exist_ok=True)
        (home / "data").mkdir(exist_ok=True)
        for name in ("lib", "themes", "providers", "conf"):
            link = home / name
            if not link.exists():
                link.symlink_to(self.distribution / name)
        # kc.sh finds its home from its own (resolved) path: a copy here puts data/ in the workdir.
        shutil.copy2(self.distribution / "bin" / "kc.sh", home / "bin" / "kc.sh")
        self.port = free_port()
        env = {
            **os.environ,
            "KC_BOOTSTRAP_ADMIN_USERNAME": "admin",
            "KC_BOOTSTRAP_ADMIN_PASSWORD": self.admin_password,
            # The quick JIT tier only: a start costs about 20 s of CPU instead of 36 s, and a test
            # realm never runs long enough for the optimising tier to pay back.
            "JAVA_OPTS_APPEND": "-XX:TieredStopAtLevel=1",
        }
        argv = [
            str(home / "bin" / "kc.sh"),
            "start",
            "--optimized",
            "--cache=local",
            "--http-enabled=true",
            "--http-host=127.0.0.1",
            f"--http-port={self.port}",
            "--hostname-strict=false",
        ]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                argv,
                cwd=home,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_LIMIT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Keycloak exited: {self.log()[-3000:]}")
            try:
                if _request("GET", f"{self.url}/realms/master", timeout=5)[0] == 200:
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"Keycloak did not start: {self.log()[-3000:]}")

    def stop(self) -> None:
        """Stop kc.sh and its JVM (one process group) by pid."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """The admin REST API (/admin/realms...), as the bootstrap admin."""
        return _request(
            method,
            f"{self.url}/admin/realms{path}",
            token=self._admin_token(),
            body=body,
            timeout=ADMIN_CALL_LIMIT,
        )

    def _admin_token(self) -> str:
        """The bootstrap admin's access token, reused until shortly before it expires: each
        password grant hashes the password, the costliest step of a small admin call."""
        with self._token_lock:
            token, expires = self._token
            if time.monotonic() < expires:
                return token
            status, answer = _request(
                "POST",
                f"{self.url}/realms/master/protocol/openid-connect/token",
                form={
                    "grant_type": "password",
                    "client_id": "admin-cli",
                    "username": "admin",
                    "password": self.admin_password,
                },
                timeout=ADMIN_CALL_LIMIT,
            )
            assert status == 200, answer
            lifetime = max(answer.get("expires_in", 0) - TOKEN_RENEWAL_MARGIN, 0)
            self._token = (answer["access_token"], time.monotonic() + lifetime)
            return answer["access_token"]


@dataclass
class Realm:
    """An IAM-shaped realm: `issuer`, the hub's client, and the users' passwords."""

    keycloak: Keycloak
    name: str
    client_id: str
    client_secret: str
    passwords: dict[str, str] = field(default_factory=dict)

    @property
    def issuer(self) -> str:
        return f"{self.keycloak.url}/realms/{self.name}"

    def admin(self, method: str, path: str = "", body: Any = None) -> tuple[int, Any]:
        return self.keycloak.admin(method, f"/{self.name}{path}", body)

    def user_id(self, username: str) -> str:
        status, found = self.admin(
            "GET", f"/users?exact=true&username={urllib.parse.quote(username)}"
        )
        assert status == 200 and len(found) == 1, (status, found)
        return found[0]["id"]

    def rename(self, username: str, new_name: str) -> None:
        user_id = self.user_id(username)
        status, user = self.admin("GET", f"/users/{user_id}")
        status, answer = self.admin("PUT", f"/users/{user_id}", {**user, "username": new_name})
        assert status == 204, answer
        self.passwords[new_name] = self.passwords.pop(username)

    def set_group(self, username: str, group_path: str, member: bool) -> None:
        status, group = self.admin("GET", f"/group-by-path/{group_path.lstrip('/')}")
        assert status == 200, group
        status, answer = self.admin(
            "PUT" if member else "DELETE", f"/users/{self.user_id(username)}/groups/{group['id']}"
        )
        assert status == 204, answer

    def revoke(self, refresh_token: str) -> None:
        """Revoke a refresh token at the provider (RFC 7009), as a user or an IAM admin would."""
        status, answer = _request(
            "POST",
            f"{self.issuer}/protocol/openid-connect/revoke",
            form={
                "token": refresh_token,
                "token_type_hint": "refresh_token",
                "client_id": self.client_id,
                "client_secret": self.client_secret,
            },
        )
        assert status == 200, answer

    def userinfo_status(self, access_token: str) -> int:
        return _request(
            "GET", f"{self.issuer}/protocol/openid-connect/userinfo", token=access_token
        )[0]


def make_realm(
    keycloak: Keycloak, name: str, users: list[dict], access_token_lifespan: int = 300
) -> Realm:
    """Create the realm of tests/oidc_realm.json with these users.

    A user is {"username", "groups": ["/cms-ml", ...], "email", "email_verified", "attributes"};
    each gets a random password (Realm.passwords)."""
    template = json.loads(REALM_TEMPLATE.read_text())
    realm = Realm(keycloak, name, template["client"]["clientId"], secrets.token_urlsafe(24))
    status, answer = keycloak.admin(
        "POST",
        "",
        {**template["realm"], "realm": name, "accessTokenLifespan": access_token_lifespan},
    )
    assert status == 201, answer
    # Let the provider send what IAM could: any attribute, usernames it would not itself allow.
    status, profile = realm.admin("GET", "/users/profile")
    profile["unmanagedAttributePolicy"] = template["user_profile"]["unmanagedAttributePolicy"]
    for attribute in profile["attributes"]:
        if attribute["name"] == "username":
            attribute["validations"] = template["user_profile"]["username_validations"]
    status, answer = realm.admin("PUT", "/users/profile", profile)
    assert status == 200, answer
    status, answer = realm.admin("POST", "/client-scopes", template["groups_scope"])
    assert status == 201, answer
    client = {
        **template["client"],
        "secret": realm.client_secret,
        "redirectUris": ["http://127.0.0.1:*"],
    }
    status, answer = realm.admin("POST", "/clients", client)
    assert status == 201, answer
    client_uuid = answer.rsplit("/", 1)[1]
    status, scopes = realm.admin("GET", "/client-scopes")
    scope_ids = {scope["name"]: scope["id"] for scope in scopes}
    for scope in template["client_default_scopes"]:
        status, answer = realm.admin(
            "PUT", f"/clients/{client_uuid}/default-client-scopes/{scope_ids[scope]}"
        )
        assert status == 204, answer
    for user in users:
        password = secrets.token_urlsafe(12)
        body = {
            "username": user["username"],
            "enabled": True,
            "firstName": "Test",
            "lastName": "User",
            "email": user.get("email", f"user{len(realm.passwords)}@example.org"),
            "emailVerified": user.get("email_verified", True),
            "groups": user.get("groups", []),
            "attributes": user.get("attributes", {}),
            "credentials": [{"type": "password", "value": password, "temporary": False}],
        }
        status, answer = realm.admin("POST", "/users", body)
        assert status == 201, (user["username"], answer)
        realm.passwords[user["username"]] = password
    return realm


class _FormFinder(html.parser.HTMLParser):
    """The provider's login form: its action and its hidden inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self._inside = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and attrs.get("id") == "kc-form-login":
            self.action, self._inside = attrs.get("action"), True
        elif tag == "input" and self._inside and attrs.get("name"):
            self.fields[attrs["name"]] = attrs.get("value") or ""

    def handle_endtag(self, tag):
        if tag == "form":
            self._inside = False


class _Recorder(urllib.request.HTTPRedirectHandler):
    """Follows redirects like a browser and remembers where they went (the callback's code)."""

    def __init__(self) -> None:
        self.visited: list[str] = []

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.visited.append(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


@dataclass
class Login:
    status: int
    url: str
    body: str
    browser: urllib.request.OpenerDirector
    codes: list[str]


def browser_login(
    hub_url: str, username: str, password: str, next_path: str = "/hub/home"
) -> Login:
    """Log in as a browser does: the hub's /hub/oauth_login, the provider's login form, the hub's
    callback. Returns where it ended (the hub page, or the hub's refusal with its status)."""
    recorder = _Recorder()
    # Browsers send Secure cookies to http://127.0.0.1 (a "potentially trustworthy" origin); so does
    # this one.
    jar = http.cookiejar.CookieJar(
        http.cookiejar.DefaultCookiePolicy(secure_protocols=("https", "http"))
    )
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), recorder)
    with browser.open(
        f"{hub_url}/hub/oauth_login?next={urllib.parse.quote(next_path)}", timeout=30
    ) as page:
        finder = _FormFinder()
        finder.feed(page.read().decode())
    assert finder.action, "the provider did not show its login form"
    form = {**finder.fields, "username": username, "password": password}
    try:
        with browser.open(
            finder.action, data=urllib.parse.urlencode(form).encode(), timeout=60
        ) as response:
            status, url, body = response.status, response.url, response.read().decode()
    except urllib.error.HTTPError as error:
        status, url, body = error.code, error.url, error.read().decode(errors="replace")
    codes = [
        urllib.parse.parse_qs(urllib.parse.urlparse(u).query).get("code", [""])[0]
        for u in recorder.visited
    ]
    return Login(status, url, body, browser, [c for c in codes if c])


@pytest.fixture(scope="session")
def keycloak(tmp_path_factory):
    """A Keycloak for the whole session, started on first use and stopped at the end; or the one
    `./dev test` serves to all its pytest processes (AIINFN_TEST_OIDC_PROVIDER, its state file),
    which it stops itself."""
    state_file = os.environ.get("AIINFN_TEST_OIDC_PROVIDER")
    if state_file:
        yield shared(Path(state_file))
        return
    provider = Keycloak(install(), tmp_path_factory.mktemp("keycloak"))
    provider.start()
    try:
        yield provider
    finally:
        provider.stop()


def _start_ticks(pid: int) -> str | None:
    """When a process started (/proc/PID/stat field 22), to tell it from a later one of its pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def serve(folder: Path) -> None:
    """Start a Keycloak that outlives this command, for every pytest process of one `./dev test`
    (both passes, all workers: each test module makes its own realm in it). Its address, admin
    password and pid go to folder/provider.json (owner-only); `stop` ends it by that pid."""
    folder = folder.resolve()  # kc.sh runs from its own folder
    folder.mkdir(parents=True, exist_ok=True)
    provider = Keycloak(install(), Path(tempfile.mkdtemp(prefix="keycloak-", dir=folder)))
    provider.start()
    assert provider.process is not None
    state = {
        "workdir": str(provider.workdir),
        "port": provider.port,
        "admin_password": provider.admin_password,
        "pid": provider.process.pid,
        "start_ticks": _start_ticks(provider.process.pid),
    }
    target = folder / SHARED_STATE
    target.touch(mode=0o600)
    target.write_text(json.dumps(state))


def shared(state_file: Path) -> Keycloak:
    """The Keycloak `serve` started, as a Keycloak whose `stop` leaves it running."""
    state = json.loads(state_file.read_text())
    provider = Keycloak(install(), Path(state["workdir"]))
    provider.port, provider.admin_password = state["port"], state["admin_password"]
    return provider


def stop_served(folder: Path) -> None:
    """Stop the Keycloak `serve` started (its process group), if that very process still runs."""
    state_file = folder / SHARED_STATE
    if not state_file.exists():
        return
    state = json.loads(state_file.read_text())
    pid = state["pid"]
    if _start_ticks(pid) is not None and _start_ticks(pid) == state["start_ticks"]:
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while _start_ticks(pid) == state["start_ticks"] and time.monotonic() < deadline:
            time.sleep(0.2)
        if _start_ticks(pid) == state["start_ticks"]:
            os.killpg(pid, signal.SIGKILL)
    shutil.rmtree(state["workdir"], ignore_errors=True)
    state_file.unlink()


def main(argv: list[str]) -> int:
    commands = {"fetch": 1, "serve": 2, "stop": 2}
    if not argv or commands.get(argv[0]) != len(argv):
        print("usage: python -m tests.oidc_provider fetch | serve DIR | stop DIR", file=sys.stderr)
        return 2
    if argv[0] == "serve":
        serve(Path(argv[1]))
        print(f"oidc provider: Keycloak serving, state in {argv[1]}", file=sys.stderr)
    elif argv[0] == "stop":
        stop_served(Path(argv[1]))
    else:
        home = install(log=lambda message: print(message, file=sys.stderr))
        print(f"oidc provider: Keycloak {KEYCLOAK_VERSION} ready in {home}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
