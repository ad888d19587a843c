"""Drill: the identity provider slow or down. The hub's back-channel to the provider (token and
userinfo endpoints) goes through a loopback proxy (fault_proxy.py, plain HTTP) in front of the
real Keycloak; the browser reaches Keycloak directly, as it would reach IAM.

What users must see: a login while the provider is down fails closed (no account, no session)
with the provider-unavailable page; a running server is untouched and reachable; while a login
waits on a slow provider the hub answers others (its event loop is not blocked: the API request
finishes while the login is still pending, a relation, not a time).
"""

from __future__ import annotations

import asyncio
import secrets
import urllib.error
import urllib.request
import uuid

import pytest
import pytest_asyncio

from tests.faults.fault_proxy import Fault, FaultProxy
from tests.helpers import wait_until
from tests.hub import KWOK_NOTEBOOKS, hub_in_namespace
from tests.oidc_provider import Login, browser_login, make_realm

pytestmark = pytest.mark.integration

USERS = [
    {"username": "alice", "groups": ["/cms-ml"]},
    {"username": "bob", "groups": ["/cms-ml"]},
    {"username": "carol", "groups": ["/cms-ml"]},
]
SPAWNER = {"default_policy": {"accelerators": ["cpu"], "environments": "*"}, "group_policies": {}}
TOKEN = r"/realms/[^/]+/protocol/openid-connect/token"
UNAVAILABLE = "the identity provider cannot be reached or is misconfigured right now"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def site(devcluster, api_client, keycloak, tmp_path_factory):
    """(hub, realm, proxy): the hub's token and userinfo URLs are the proxy's."""
    kubeconfig, _ = devcluster
    tmp = tmp_path_factory.mktemp("idp")
    iam = await asyncio.to_thread(make_realm, keycloak, f"idp-{uuid.uuid4().hex[:6]}", USERS)
    proxy = FaultProxy(keycloak.url, None, tmp / "proxy")
    await asyncio.to_thread(proxy.start)
    endpoints = f"{proxy.url}/realms/{iam.name}/protocol/openid-connect"
    config = [
        "c.JupyterHub.authenticator_class = 'aiinfn'",
        f"c.AiInfnOAuthenticator.issuer = {iam.issuer!r}",
        f"c.AiInfnOAuthenticator.client_id = {iam.client_id!r}",
        f"c.AiInfnOAuthenticator.token_url = '{endpoints}/token'",
        f"c.AiInfnOAuthenticator.userdata_url = '{endpoints}/userinfo'",
        *KWOK_NOTEBOOKS,
    ]
    env = {"OAUTH_CLIENT_SECRET": iam.client_secret, "JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32)}
    try:
        async with hub_in_namespace(
            api_client, kubeconfig, tmp / "hub", {}, SPAWNER, config, env
        ) as hub:
            yield hub, iam, proxy
    finally:
        await asyncio.to_thread(proxy.stop)


async def login(hub, iam, user: str) -> Login:
    return await asyncio.to_thread(browser_login, hub.url, user, iam.passwords[user])


def logged_in(result: Login) -> bool:
    return result.status == 200 and result.url.endswith("/hub/home")


async def account(hub, user: str) -> dict | None:
    status, model = await asyncio.to_thread(hub.request, "GET", f"/users/{user}")
    return model if status == 200 else None


def route_answers(hub, user: str) -> int:
    """The status of the user's server through the hub's proxy (the notebook stand-in)."""
    try:
        with urllib.request.urlopen(f"{hub.url}/user/{user}/api/status", timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


async def test_a_slow_provider_holds_only_its_own_login(site):
    hub, iam, proxy = site
    fault = proxy.inject(Fault("POST", TOKEN, delay=8.0, times=1))
    pending = asyncio.ensure_future(login(hub, iam, "carol"))
    try:
        await wait_until(
            lambda: asyncio.sleep(0, fault.hits >= 1), "the login to reach the provider"
        )
        # The hub answers the API and serves its pages while carol's callback waits on the token.
        status, _ = await asyncio.to_thread(hub.request, "GET", "/users")
        login_page = await asyncio.to_thread(
            urllib.request.urlopen, f"{hub.url}/hub/login", None, 30
        )
        assert status == 200 and login_page.status == 200
        assert not pending.done()
        assert logged_in(await pending)  # slow is not down: the login completes
    finally:
        proxy.faults.remove(fault)
        await asyncio.gather(pending, return_exceptions=True)


async def test_a_provider_down_refuses_new_logins_and_leaves_running_servers(site, core):
    hub, iam, proxy = site
    assert logged_in(await login(hub, iam, "alice"))
    status, answer = await asyncio.to_thread(hub.request, "POST", "/users/alice/server", {})
    assert status in (201, 202), answer

    async def ready():
        model = await account(hub, "alice")
        return model["servers"].get("", {}).get("ready")

    await wait_until(ready, "alice's server to be ready")

    for fault in (Fault("POST", TOKEN, drop=True), Fault("POST", TOKEN, status=503)):
        proxy.inject(fault)
        try:
            refused = await login(hub, iam, "bob")
        finally:
            proxy.faults.remove(fault)
        assert fault.hits == 1
        # Fails closed, in words: no account, no session, the provider-unavailable page.
        assert refused.status == 503 and "/hub/oauth_callback" in refused.url, refused.status
        assert UNAVAILABLE in refused.body.replace("&#39;", "'")
        assert await account(hub, "bob") is None
        # Alice's server runs on and answers through the hub's proxy.
        assert await ready()
        assert await asyncio.to_thread(route_answers, hub, "alice") == 200
    pods = await core.list_namespaced_pod(hub.namespace)
    assert [p.metadata.annotations.get("hub.jupyter.org/username") for p in pods.items] == ["alice"]
    assert "Uncaught exception" not in hub.log()
    # The provider back: bob logs in with the same hub.
    assert logged_in(await login(hub, iam, "bob"))
    await asyncio.to_thread(hub.request, "DELETE", "/users/alice/server")
    assert hub.process.poll() is None
