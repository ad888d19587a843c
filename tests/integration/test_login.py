"""Login with a real OpenID provider (Keycloak, shaped like INDIGO IAM) through a real JupyterHub:
/hub/oauth_login -> the provider's login form -> /hub/oauth_callback, then groups, admin rights,
every bad identity the provider can send, token refresh before a spawn on the dev cluster and on
API requests, revocation, and a hub log with no token or secret in it."""

from __future__ import annotations

import asyncio
import base64
import http.server
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field

import jwt
import pytest
import pytest_asyncio

from aiinfn_hub import tokens
from tests.helpers import wait_until
from tests.hub import KWOK_NOTEBOOKS, Hub, hub_in_namespace, start_hub, stop_hub
from tests.oidc_provider import Login, Realm, browser_login, make_realm

pytestmark = pytest.mark.integration

TOKEN_LIFESPAN = 10  # seconds: short, so the tests can watch tokens expire and be refreshed
USERS = [
    {
        "username": "alice",
        "groups": ["/cms-ml", "/cms-ml/gpu", "/aiinfn-admins", "/other-experiment"],
    },
    {"username": "bob", "groups": ["/lhcb-flashsim"]},
    {"username": "carol", "groups": ["/qml"]},
    {"username": "dave", "groups": ["/cms-ml", "/qml", "/aiinfn-admins"]},
    {"username": "tom", "groups": ["/qml"]},
    {"username": "a_b", "groups": ["/qml"]},
    {"username": "ab", "groups": ["/qml"]},
    {"username": "erin", "groups": ["/qml"]},
    {"username": "mallory", "groups": ["/qml"]},
    {"username": "torn", "groups": ["/qml"]},  # looks like "tom"
    {
        "username": "hana",
        "groups": ["/qml", "/cms-ml"],
        "attributes": {"single_group": ["cms ml!"]},
    },  # one unusable group
    {"username": "ivan", "groups": ["/qml"]},
    {"username": "sam", "attributes": {"single_group": ["cms-ml"]}},
    {"username": "nogroups"},
    {"username": "outsider", "groups": ["/other-experiment"]},
    {"username": "-dash", "groups": ["/qml"]},
    {"username": "a..b", "groups": ["/qml"]},
    {"username": "x" * 70, "groups": ["/qml"]},
    {"username": "\u0430lice", "groups": ["/qml"]},
    {"username": "frank", "email": "frank@example.org", "attributes": {"single_group": ["qml"]}},
    {
        "username": "gina",
        "email": "gina@example.org",
        "email_verified": False,
        "groups": ["/qml"],
        "attributes": {"single_group": ["qml"]},
    },
]
EARLY = ("bob", "tom", "carol")
SPAWNER = {"default_policy": {"accelerators": ["cpu"], "environments": "*"}, "group_policies": {}}


@dataclass
class Site:
    """The hub, the provider's realm, and every secret the tests saw (none may reach the log)."""

    hub: Hub
    iam: Realm
    secrets: set[str] = field(default_factory=set)
    early: dict[str, Login] = field(default_factory=dict)

    async def login(self, username: str, hub: Hub | None = None) -> Login:
        result = await asyncio.to_thread(
            browser_login, (hub or self.hub).url, username, self.iam.passwords[username]
        )
        self.secrets.update(result.codes)
        self.secrets.add(self.iam.passwords[username])
        return result

    async def api(
        self, method: str, path: str, body=None, token: str | None = None, hub: Hub | None = None
    ):
        return await asyncio.to_thread((hub or self.hub).request, method, path, body, token)

    async def user(self, name: str, hub: Hub | None = None) -> dict | None:
        status, model = await self.api(
            "GET", f"/users/{urllib.parse.quote(name, safe='')}", hub=hub
        )
        if status == 404:
            return None
        assert status == 200, model
        state = model.get("auth_state") or {}
        self.secrets.update(v for k, v in state.items() if k.endswith("_token") and v)
        return model


def hub_config(iam: Realm) -> list[str]:
    return [
        "c.JupyterHub.authenticator_class = 'aiinfn'",
        f"c.AiInfnOAuthenticator.issuer = {iam.issuer!r}",
        f"c.AiInfnOAuthenticator.client_id = {iam.client_id!r}",
        "c.AiInfnOAuthenticator.admin_groups = {'aiinfn-admins'}",
        "c.AiInfnOAuthenticator.system_groups = {'cms-ml/gpu'}",
        "c.AiInfnOAuthenticator.auth_refresh_age = 2",
        "c.AiInfnOAuthenticator.access_token_refresh_margin = 3",
        "c.KubeSpawner.poll_interval = 1",
    ]


def hub_env(iam: Realm, crypt_key: str) -> dict[str, str]:
    """The client secret and the crypt key reach the hub as environment, never as config lines."""
    return {"OAUTH_CLIENT_SECRET": iam.client_secret, "JUPYTERHUB_CRYPT_KEY": crypt_key}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def site(devcluster, api_client, keycloak, tmp_path_factory):
    kubeconfig, _ = devcluster
    iam = await asyncio.to_thread(
        make_realm, keycloak, f"login-{uuid.uuid4().hex[:6]}", USERS, TOKEN_LIFESPAN
    )
    crypt_key = secrets.token_hex(32)
    async with hub_in_namespace(
        api_client,
        kubeconfig,
        tmp_path_factory.mktemp("hub"),
        {},
        SPAWNER,
        [*hub_config(iam), *KWOK_NOTEBOOKS],
        hub_env(iam, crypt_key),
    ) as hub:
        site = Site(hub, iam, {iam.client_secret, crypt_key, keycloak.admin_password})
        # Logged in first, so their tokens have expired by the time the refresh tests run.
        site.early = dict(
            zip(EARLY, await asyncio.gather(*(site.login(name) for name in EARLY)), strict=True)
        )
        yield site


def logged_in(result: Login) -> bool:
    return result.status == 200 and result.url.endswith("/hub/home")


def refusal(result: Login) -> str:
    """The hub's error page message, unescaped enough to compare."""
    assert result.status in (403, 503), (result.status, result.url)
    assert "/hub/oauth_callback" in result.url
    return result.body.replace("&#39;", "'").replace("&#x27;", "'")


async def wait_expired(state: dict) -> None:
    """Sleep until this access token has expired at the provider (not a timing assertion)."""
    await asyncio.sleep(max(0.0, state["token_response"]["expires_at"] - time.time() + 1))


async def test_login_through_the_provider_maps_groups_and_admin(site):
    assert logged_in(await site.login("alice"))
    alice = await site.user("alice")
    assert alice["admin"] is True
    assert sorted(alice["groups"]) == ["aiinfn-admins", "cms-ml", "cms-ml/gpu"]
    state = alice["auth_state"]
    assert state["access_token"] and state["refresh_token"] and state["id_token"]
    assert state["aiinfn"]["issuer"] == site.iam.issuer
    assert state["aiinfn"]["subject"] == await asyncio.to_thread(site.iam.user_id, "alice")

    assert logged_in(site.early["bob"])
    bob = await site.user("bob")
    assert (bob["admin"], bob["groups"]) == (False, ["lhcb-flashsim"])

    status, groups = await site.api("GET", "/groups")
    names = {group["name"] for group in groups}
    assert {"cms-ml", "cms-ml/gpu", "lhcb-flashsim"} <= names and "other-experiment" not in names
    status, subgroup = await site.api("GET", "/groups/cms-ml%2Fgpu")
    assert subgroup["users"] == ["alice"]


async def test_leaving_a_project_takes_effect_at_the_next_refresh(site):
    login = await site.login("dave")
    assert logged_in(login)
    assert sorted((await site.user("dave"))["groups"]) == ["aiinfn-admins", "cms-ml", "qml"]
    for group in ("/cms-ml", "/aiinfn-admins"):
        await asyncio.to_thread(site.iam.set_group, "dave", group, False)

    async def home_url() -> str:
        with await asyncio.to_thread(login.browser.open, f"{site.hub.url}/hub/home") as page:
            return page.url

    async def groups_refreshed():
        await home_url()  # once auth_refresh_age has passed, dave's next request refreshes him
        dave = await site.user("dave")
        return dave if dave["groups"] == ["qml"] else None

    dave = await wait_until(groups_refreshed, "dave's request to refresh his groups", interval=0.5)
    assert dave["admin"] is False

    await asyncio.to_thread(site.iam.set_group, "dave", "/other-experiment", True)
    await asyncio.to_thread(site.iam.set_group, "dave", "/qml", False)

    async def logged_out() -> bool:
        return "/hub/login" in await home_url()  # no allowed group left: logged out...

    await wait_until(logged_out, "dave's request to log him out", interval=0.5)
    assert "give no access to this hub" in refusal(await site.login("dave"))  # ...and refused


async def test_usernames_are_taken_exactly_as_sent(site):
    assert logged_in(await site.login("a_b")) and logged_in(await site.login("ab"))
    first, second = await site.user("a_b"), await site.user("ab")
    assert first["auth_state"]["aiinfn"]["subject"] != second["auth_state"]["aiinfn"]["subject"]
    # JupyterHub's default would lowercase: here "Alice" (made by an admin) and "alice" are two
    # users.
    assert (await site.api("POST", "/users/Alice"))[0] == 201
    assert (await site.user("Alice"))["name"] == "Alice"
    for bad in ["\u0430lice", "-rf", "a..b", "x" * 65]:
        status, answer = await site.api("POST", f"/users/{urllib.parse.quote(bad, safe='')}")
        assert status == 400, (bad, answer)


@pytest.mark.parametrize(
    "username, says",
    [
        ("-dash", "must not start with '-'"),
        ("a..b", "must not contain '..'"),
        ("x" * 70, "longer than 64 characters"),
        ("\u0430lice", "U+0430 CYRILLIC SMALL LETTER A"),
    ],
)
async def test_bad_usernames_from_the_provider_are_refused(site, username, says):
    message = refusal(await site.login(username))
    assert "cannot be used on this hub" in message and says in message
    assert await site.user(username) is None


async def test_an_idp_rename_cannot_take_over_an_account(site):
    assert logged_in(await site.login("erin"))
    erin_subject = (await site.user("erin"))["auth_state"]["aiinfn"]["subject"]
    await asyncio.to_thread(site.iam.rename, "erin", "erin-renamed")
    await asyncio.to_thread(site.iam.rename, "mallory", "erin")
    assert "belongs to another person" in refusal(await site.login("erin"))
    assert (await site.user("erin"))["auth_state"]["aiinfn"]["subject"] == erin_subject
    assert logged_in(
        await site.login("erin-renamed")
    )  # the real erin, as a new account under her new name
    assert (await site.user("erin-renamed"))["auth_state"]["aiinfn"]["subject"] == erin_subject


async def test_a_new_account_that_looks_like_an_existing_one_is_refused(site):
    """'torn' reads as 'tom' (who logged in first): the hub does not create it. Admins who know
    they are two people create the account through the REST API; the next login binds it."""
    assert logged_in(site.early["tom"])
    message = refusal(await site.login("torn"))
    assert "looks like the name of an existing account" in message and "'tom'" not in message
    assert await site.user("torn") is None
    assert "new account 'torn' looks like the existing account 'tom'" in site.hub.log()
    assert (await site.api("POST", "/users/torn"))[0] == 201
    assert logged_in(await site.login("torn"))
    assert (await site.user("torn"))["auth_state"]["aiinfn"]["subject"] == await asyncio.to_thread(
        site.iam.user_id, "torn"
    )


async def test_a_string_groups_claim_is_one_group(site):
    assert logged_in(await site.login("sam"))
    assert (await site.user("sam"))["groups"] == ["cms-ml"]


async def test_one_unusable_group_is_dropped_and_the_others_kept(site):
    assert logged_in(await site.login("hana"))
    assert sorted((await site.user("hana"))["groups"]) == ["cms-ml", "qml"]
    assert (
        "Ignoring a group of hana from the identity provider: 'cms ml!' in the 'groups' claim"
        in site.hub.log()
    )


class _UserinfoProxy(http.server.BaseHTTPRequestHandler):
    """The provider's userinfo endpoint seen through a loopback proxy that can instead answer 500
    ("fail") or close the connection without an answer ("drop")."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.server.mode == "drop":
            self.close_connection = True
            return
        status, body = 500, b'{"error": "server_error"}'
        if self.server.mode == "forward":
            headers = {"Authorization": self.headers["Authorization"]}
            request = urllib.request.Request(self.server.upstream, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:
                    status, body = answer.status, answer.read()
            except urllib.error.HTTPError as error:
                status, body = error.code, error.read()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


async def test_a_failing_userinfo_endpoint_shows_the_provider_unavailable_page(site, tmp_path):
    """A hub whose userinfo URL is a loopback proxy in front of the provider's."""
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _UserinfoProxy)
    proxy.upstream, proxy.mode = f"{site.iam.issuer}/protocol/openid-connect/userinfo", "fail"
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    userinfo = f"http://127.0.0.1:{proxy.server_address[1]}/userinfo"
    config = [*hub_config(site.iam), f"c.AiInfnOAuthenticator.userdata_url = {userinfo!r}"]
    crypt_key = secrets.token_hex(32)
    site.secrets.add(crypt_key)
    try:
        hub, responder = await asyncio.to_thread(
            start_hub,
            tmp_path,
            site.hub.kubeconfig,
            site.hub.namespace,
            {},
            SPAWNER,
            config,
            hub_env(site.iam, crypt_key),
        )
        try:
            for mode in ("fail", "drop"):
                proxy.mode = mode
                login = await site.login("ivan", hub)
                assert login.status == 503, (mode, login.status)
                assert "identity provider cannot be reached or is misconfigured" in refusal(login)
                assert await site.user("ivan", hub) is None
            proxy.mode = "forward"  # the same hub logs in once the endpoint answers again
            assert logged_in(await site.login("ivan", hub))
        finally:
            await asyncio.to_thread(stop_hub, hub, responder)
    finally:
        proxy.shutdown()
        proxy.server_close()
    log = hub.log()
    assert "Login refused: the identity provider cannot be used (HTTPClientError: HTTP 500" in log
    assert "Uncaught exception" not in log
    assert_no_secrets(log, site.secrets)


async def test_no_groups_claim_or_no_allowed_group_is_refused(site):
    assert "no group membership" in refusal(await site.login("nogroups"))
    assert "give no access to this hub; ask to join one of its projects" in refusal(
        await site.login("outsider")
    )
    assert await site.user("nogroups") is None and await site.user("outsider") is None


async def test_email_as_username_needs_a_verified_address(site, tmp_path):
    """A hub that names users by e-mail and does not ask for the groups scope."""
    config = [
        *hub_config(site.iam),
        "c.AiInfnOAuthenticator.username_claim = 'email'",
        "c.AiInfnOAuthenticator.scope = ['openid', 'profile', 'email', 'offline_access']",
    ]
    crypt_key = secrets.token_hex(32)
    site.secrets.add(crypt_key)
    hub, responder = await asyncio.to_thread(
        start_hub,
        tmp_path,
        site.hub.kubeconfig,
        site.hub.namespace,
        {},
        SPAWNER,
        config,
        hub_env(site.iam, crypt_key),
    )
    try:
        assert logged_in(await site.login("frank", hub))
        frank = await site.user("frank@example.org", hub)
        assert frank["groups"] == ["qml"]
        assert "e-mail address is not verified" in refusal(await site.login("gina", hub))
        assert "no group membership" in refusal(
            await site.login("alice", hub)
        )  # no wlcg.groups scope
        assert await site.user("gina@example.org", hub) is None
    finally:
        await asyncio.to_thread(stop_hub, hub, responder)
    assert_no_secrets(hub.log(), site.secrets)


async def test_an_expired_access_token_is_refreshed_before_spawn(site, core):
    before = (await site.user("bob"))["auth_state"]
    await wait_expired(before)
    status, answer = await site.api("POST", "/users/bob/server", {})
    assert status in (201, 202), answer
    # Refreshed before the spawn request was answered. The new token lives only TOKEN_LIFESPAN
    # seconds, which a busy machine may spend between the refresh and this check: the provider
    # must accept it unless its own expiry (the token's `exp`, by the provider's clock, which is
    # this machine's) has passed by the time it answers.
    after = (await site.user("bob"))["auth_state"]
    assert after["access_token"] != before["access_token"]
    assert after["token_response"]["expires_at"] > before["token_response"]["expires_at"]
    accepted = await asyncio.to_thread(site.iam.userinfo_status, after["access_token"])
    answered = time.time()
    expiry = jwt.decode(after["access_token"], options={"verify_signature": False})["exp"]
    assert accepted == 200 or (accepted == 401 and answered >= expiry), (accepted, expiry)
    assert await asyncio.to_thread(site.iam.userinfo_status, before["access_token"]) == 401

    async def ready():
        model = await site.user("bob")
        return model["servers"].get("", {}).get("ready")

    await wait_until(ready, "bob's server to be ready")
    # The spawner hands the current access token (only that) to the notebook's token Secret at
    # each poll; the running server's own requests may refresh it again meanwhile.

    async def secret_holds_the_current_token():
        current = (await site.user("bob"))["auth_state"]["access_token"]
        secret = await core.read_namespaced_secret(tokens.secret_name("bob"), site.hub.namespace)
        held = base64.b64decode(secret.data["access_token"]).decode()
        return secret if tokens.fingerprint(held) == tokens.fingerprint(current) else None

    secret = await wait_until(
        secret_holds_the_current_token, "the token Secret to hold the current token"
    )
    assert set(secret.data) == {"access_token"}
    assert (await site.api("DELETE", "/users/bob/server"))[0] in (202, 204)


async def test_api_requests_refresh_tokens_without_a_browser(site):
    """A running server reports its activity every few minutes with its own token: that refreshes
    the user's tokens, with no browser involved (the spawner then copies the new access token)."""
    assert logged_in(site.early["tom"])
    status, answer = await site.api("POST", "/users/tom/tokens", {"note": "server stand-in"})
    assert status == 201, answer
    token = answer["token"]
    site.secrets.add(token)
    before = (await site.user("tom"))["auth_state"]
    await wait_expired(before)
    status, answer = await site.api(
        "POST",
        "/users/tom/activity",
        {"last_activity": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        token=token,
    )
    assert status == 200, answer
    after = (await site.user("tom"))["auth_state"]
    assert after["access_token"] != before["access_token"]
    assert await asyncio.to_thread(site.iam.userinfo_status, after["access_token"]) == 200


async def test_a_revoked_refresh_token_forces_a_new_login(site):
    login = site.early["carol"]
    assert logged_in(login)
    before = (await site.user("carol"))["auth_state"]
    await asyncio.to_thread(site.iam.revoke, before["refresh_token"])
    await wait_expired(before)
    status, answer = await site.api("POST", "/users/carol/server", {})
    assert status == 403 and "login again" in answer["message"], answer
    with await asyncio.to_thread(login.browser.open, f"{site.hub.url}/hub/home") as page:
        assert "/hub/login" in page.url
    assert logged_in(await site.login("carol"))
    again = (await site.user("carol"))["auth_state"]
    assert again["refresh_token"] != before["refresh_token"]


def assert_no_secrets(log: str, seen: set[str]) -> None:
    assert "oauth_callback" in log  # the log is the real one, with the logins in it
    for secret in seen:
        assert secret not in log, f"a secret ({secret[:6]}...) is in the hub log"


async def test_the_hub_log_holds_no_token_or_secret(site):
    """Runs last in this module: every token, code, password and secret the tests saw."""
    assert len(site.secrets) > 20
    assert_no_secrets(site.hub.log(), site.secrets)


def test_without_a_crypt_key_the_hub_does_not_start(site, tmp_path, monkeypatch):
    monkeypatch.delenv("JUPYTERHUB_CRYPT_KEY", raising=False)
    config = [
        "c.JupyterHub.authenticator_class = 'aiinfn'",
        "c.AiInfnOAuthenticator.issuer = 'https://iam.example.org/'",
    ]
    with pytest.raises(RuntimeError) as failed:
        start_hub(tmp_path, site.hub.kubeconfig, site.hub.namespace, {}, {}, config)
    assert "Set JUPYTERHUB_CRYPT_KEY in the hub's environment" in str(failed.value)
