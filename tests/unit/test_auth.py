"""AiInfnOAuthenticator's hooks with the identity provider's HTTP mocked: defaults, start-up
checks, the login decisions end to end through JupyterHub's get_authenticated_user, and
refresh. The real provider and the real hub are in tests/integration/test_login.py."""

from __future__ import annotations

import io
import itertools
import json
import logging
import time
from urllib.parse import parse_qs

import jwt
import pytest
import sqlalchemy
import sqlalchemy.orm
from jupyterhub import orm
from jupyterhub.crypto import CryptKeeper
from oauthenticator.oauth2 import _serialize_state
from tornado import web
from tornado.httpclient import HTTPClientError, HTTPRequest, HTTPResponse
from tornado.simple_httpclient import HTTPStreamClosedError, HTTPTimeoutError
from traitlets.config import Config

from aiinfn_hub.auth import AiInfnOAuthenticator

ISSUER = "https://iam.example.org/"
TOKEN_URL = "https://iam.example.org/token"
USERINFO_URL = "https://iam.example.org/userinfo"
DOCUMENT = {
    "issuer": ISSUER,
    "authorization_endpoint": "https://iam.example.org/authorize",
    "token_endpoint": TOKEN_URL,
    "userinfo_endpoint": USERINFO_URL,
}
CLIENT_SECRET = "client-secret-never-logged"


class FakeIdP:
    """The provider's discovery, token and userinfo endpoints, answering like IAM."""

    def __init__(self) -> None:
        self.people = {
            "sub-alice": {
                "sub": "sub-alice",
                "preferred_username": "alice",
                "email": "alice@infn.it",
                "email_verified": True,
                "wlcg.groups": ["/cms-ml", "/cms-ml/gpu"],
            }
        }
        self.who = "sub-alice"
        self.expires_in = 3600
        self.issued: list[str] = []
        self.valid: dict[str, str] = {}
        self.revoked: set[str] = set()
        self.grants: list[str] = []
        self.discoveries = 0
        self.document = DOCUMENT
        self.faults: dict[str, object] = {}  # url -> an HTTP status, an exception, or a raw body
        self._serial = itertools.count(1)

    def _issue(self, subject: str) -> dict:
        n = next(self._serial)
        access, refresh = f"access-token-{n}-secret", f"refresh-token-{n}-secret"
        id_token = jwt.encode(
            {"iss": ISSUER, "aud": "hub", "sub": subject}, "k" * 32, algorithm="HS256"
        )
        self.valid[access] = self.valid[refresh] = subject
        self.issued += [access, refresh, id_token]
        return {
            "access_token": access,
            "refresh_token": refresh,
            "id_token": id_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "scope": "openid profile email offline_access wlcg.groups",
        }

    @staticmethod
    def _answer(request, code, body):
        response = HTTPResponse(request, code, buffer=io.BytesIO(json.dumps(body).encode()))
        if code >= 400:
            raise HTTPClientError(code, response=response)
        return response

    async def fetch(self, request: HTTPRequest, raise_error=True, **kwargs):
        fault = self.faults.get(request.url)
        if isinstance(fault, BaseException):
            raise fault
        if isinstance(fault, int):
            return self._answer(request, fault, {"error": "server_error"})
        if isinstance(fault, bytes):
            return HTTPResponse(request, 200, buffer=io.BytesIO(fault))
        if request.url == ISSUER.rstrip("/") + "/.well-known/openid-configuration":
            self.discoveries += 1
            return self._answer(request, 200, self.document)
        if request.url == TOKEN_URL:
            form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
            assert form["client_secret"] == CLIENT_SECRET
            self.grants.append(form["grant_type"])
            if form["grant_type"] == "authorization_code":
                return self._answer(request, 200, self._issue(self.who))
            token = form["refresh_token"]
            if token in self.revoked or token not in self.valid:
                return self._answer(
                    request,
                    400,
                    {"error": "invalid_grant", "error_description": "Token is not active"},
                )
            return self._answer(request, 200, self._issue(self.valid[token]))
        if request.url == USERINFO_URL:
            token = request.headers["Authorization"].split(" ", 1)[1]
            if token not in self.valid or token in self.revoked:
                return self._answer(request, 401, {"error": "invalid_token"})
            return self._answer(request, 200, self.people[self.valid[token]])
        raise AssertionError(f"unexpected request to {request.url}")


class FakeUser:
    def __init__(self, name: str, auth_state: dict | None) -> None:
        self.name = name
        self.auth_state = auth_state

    async def get_auth_state(self):
        return self.auth_state


class FakeHandler:
    """The OAuth callback handler, as far as the authenticator uses it; `db` is a real (in-memory)
    hub database holding the accounts' names."""

    def __init__(self, users: dict[str, FakeUser] | None = None) -> None:
        self.users = users or {}
        engine = sqlalchemy.create_engine("sqlite://")  # no alembic check: it resets the loggers
        orm.Base.metadata.create_all(engine)
        self.db = sqlalchemy.orm.Session(engine)
        self.db.add_all(orm.User(name=name) for name in self.users)
        self.db.commit()

    def get_argument(self, name, default=None):
        return "authorization-code" if name == "code" else default

    def get_state_cookie(self):
        return _serialize_state({"state_id": "s", "code_verifier": "v" * 43})

    def find_user(self, name):
        return self.users.get(name)


@pytest.fixture
def crypt_key(monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_CRYPT_KEY", "0" * 64)
    CryptKeeper.clear_instance()
    yield
    CryptKeeper.clear_instance()


@pytest.fixture
def idp():
    return FakeIdP()


def make(idp, **settings) -> AiInfnOAuthenticator:
    config = Config()
    config.AiInfnOAuthenticator.update(
        {
            "issuer": ISSUER,
            "client_id": "hub",
            "client_secret": CLIENT_SECRET,
            "oauth_callback_url": "https://hub.example.org/hub/oauth_callback",
            "admin_groups": {"aiinfn-admins"},
            "system_groups": {"cms-ml/gpu"},
            **settings,
        }
    )
    authenticator = AiInfnOAuthenticator(config=config)
    authenticator.http_client = idp
    return authenticator


async def login(authenticator, users=None):
    return await authenticator.get_authenticated_user(FakeHandler(users), None)


async def refused(authenticator, users=None, status=403) -> str:
    with pytest.raises(web.HTTPError) as error:
        await login(authenticator, users)
    assert error.value.status_code == status
    assert error.value.log_message is None  # tornado would log the callback URL (with the code)
    return error.value.jupyterhub_message


# -- configuration ---------------------------------------------------------------------------


def test_iam_defaults(crypt_key, idp):
    authenticator = make(idp)
    assert authenticator.scope == ["openid", "profile", "email", "offline_access", "wlcg.groups"]
    assert authenticator.username_claim == "preferred_username"
    assert authenticator.group_claims == ["wlcg.groups", "groups"]
    assert authenticator.login_service == "INDIGO IAM"
    assert authenticator.enable_auth_state and authenticator.manage_groups
    assert authenticator.refresh_pre_spawn
    assert authenticator.projects == {"cms-ml", "lhcb-flashsim", "qml"}
    assert authenticator.allowed_groups == {"cms-ml", "lhcb-flashsim", "qml"}


def test_without_a_crypt_key_the_hub_does_not_start(monkeypatch, idp):
    monkeypatch.delenv("JUPYTERHUB_CRYPT_KEY", raising=False)
    CryptKeeper.clear_instance()
    with pytest.raises(SystemExit, match="Set JUPYTERHUB_CRYPT_KEY"):
        make(idp)


def test_auth_state_cannot_be_switched_off(crypt_key, idp):
    with pytest.raises(SystemExit, match="enable_auth_state must stay True"):
        make(idp, enable_auth_state=False)


def test_an_issuer_is_required_and_must_be_https(crypt_key, idp):
    with pytest.raises(
        SystemExit, match="AiInfnOAuthenticator.issuer .the IAM issuer URL. is missing"
    ):
        make(idp, issuer="")
    with pytest.raises(SystemExit, match="must use https"):
        make(idp, issuer="http://iam.example.org/")


def test_usernames_are_not_lowercased_and_bad_ones_are_invalid(crypt_key, idp):
    authenticator = make(idp)
    assert authenticator.normalize_username("Alice") == "Alice"
    assert authenticator.validate_username("Alice") and authenticator.validate_username("a_b")
    for bad in ["\u0430lice", "-rf", "a..b", "a/b", "x" * 65, "", "."]:
        assert not authenticator.validate_username(bad)


async def test_groups_named_elsewhere_in_the_config_are_kept(crypt_key, idp):
    idp.people["sub-alice"]["wlcg.groups"] += ["/envs-admins", "/gpu-power", "/unused"]
    config = Config()
    config.AiInfnPlatform.group_policies = {"gpu-power": {"accelerators": "*"}}
    authenticator = make(idp)
    authenticator.config.merge(config)
    assert (await login(authenticator))["groups"] == [
        "cms-ml",
        "cms-ml/gpu",
        "envs-admins",
        "gpu-power",
    ]


# -- login -----------------------------------------------------------------------------------


async def test_a_login_maps_groups_admin_and_binds_the_identity(crypt_key, idp):
    idp.people["sub-alice"]["wlcg.groups"] += ["/aiinfn-admins", "/other-experiment"]
    model = await login(make(idp))
    assert model["name"] == "alice"
    assert model["groups"] == ["aiinfn-admins", "cms-ml", "cms-ml/gpu"]
    assert model["admin"] is True
    state = model["auth_state"]
    assert state["aiinfn"] == {
        "issuer": ISSUER,
        "subject": "sub-alice",
        "email": "alice@infn.it",
        "groups": ["aiinfn-admins", "cms-ml", "cms-ml/gpu", "other-experiment"],
    }
    assert (
        state["access_token"] == "access-token-1-secret"
        and state["refresh_token"] == "refresh-token-1-secret"
    )
    assert state["token_response"]["expires_at"] > time.time() + 3000
    assert idp.discoveries == 1


async def test_leaving_the_admin_group_takes_admin_away(crypt_key, idp):
    assert (await login(make(idp)))["admin"] is False


async def test_a_10_mb_username_is_answered_with_403(crypt_key, idp):
    idp.people["sub-alice"]["preferred_username"] = "a" * 10_000_000
    message = await refused(make(idp))
    assert "longer than 64 characters" in message and len(message) < 300


@pytest.mark.parametrize(
    "name, says",
    [
        ("\u0430lice", "CYRILLIC SMALL LETTER A"),
        ("../alice", "'..'"),
        ("al\x00ice", "control character"),
        ("-alice", "must not start with '-'"),
    ],
)
async def test_bad_usernames_are_refused_with_a_clear_message(crypt_key, idp, name, says):
    idp.people["sub-alice"]["preferred_username"] = name
    assert says in await refused(make(idp))


async def test_a_missing_groups_claim_refuses(crypt_key, idp):
    del idp.people["sub-alice"]["wlcg.groups"]
    assert "no group membership" in await refused(make(idp))


async def test_a_string_groups_claim_is_one_group(crypt_key, idp):
    del idp.people["sub-alice"]["wlcg.groups"]
    idp.people["sub-alice"]["groups"] = "qml"
    assert (await login(make(idp)))["groups"] == ["qml"]


async def test_an_unusable_group_is_dropped_and_logged_and_the_rest_kept(crypt_key, idp, caplog):
    idp.people["sub-alice"]["wlcg.groups"] = ["/cms-ml", "/cms ml", "/\u212aqml", "/cms-ml/gpu"]
    model = await login(make(idp))
    assert model["groups"] == ["cms-ml", "cms-ml/gpu"]
    assert model["auth_state"]["aiinfn"]["groups"] == ["cms-ml", "cms-ml/gpu"]
    assert (
        "Ignoring a group of alice from the identity provider: '/cms ml' in the 'wlcg.groups'"
        in caplog.text
    )
    assert "'/\u212aqml' in the 'wlcg.groups' claim" in caplog.text


async def test_a_malformed_groups_claim_refuses(crypt_key, idp):
    idp.people["sub-alice"]["wlcg.groups"] = {"/cms-ml": True}
    assert "neither a group nor a list" in await refused(make(idp))


async def test_no_allowed_group_refuses_with_the_projects_to_join(crypt_key, idp):
    idp.people["sub-alice"]["wlcg.groups"] = ["/other-experiment"]
    assert "ask to join one of its projects (cms-ml, lhcb-flashsim, qml)" in await refused(
        make(idp)
    )


async def test_an_unverified_email_is_not_used_as_username(crypt_key, idp):
    idp.people["sub-alice"]["email_verified"] = False
    assert "not verified" in await refused(make(idp, username_claim="email"))
    idp.people["sub-alice"]["email_verified"] = True
    assert (await login(make(idp, username_claim="email")))["name"] == "alice@infn.it"


async def test_an_unverified_email_is_not_kept(crypt_key, idp):
    idp.people["sub-alice"]["email_verified"] = "true"
    assert (await login(make(idp)))["auth_state"]["aiinfn"]["email"] is None


async def test_a_rename_onto_a_bound_account_is_refused(crypt_key, idp):
    existing = FakeUser("alice", {"aiinfn": {"issuer": ISSUER, "subject": "sub-someone-else"}})
    assert "belongs to another person" in await refused(make(idp), {"alice": existing})


async def test_the_same_person_and_an_unbound_account_may_log_in(crypt_key, idp, caplog):
    authenticator = make(idp)
    same = FakeUser("alice", {"aiinfn": {"issuer": ISSUER, "subject": "sub-alice"}})
    assert (await login(authenticator, {"alice": same}))["name"] == "alice"
    with caplog.at_level(logging.INFO):
        assert (await login(authenticator, {"alice": FakeUser("alice", None)}))["name"] == "alice"
    assert "Binding existing user alice" in caplog.text


async def test_a_kelvin_sign_is_refused_not_bound_to_an_unbound_kate(crypt_key, idp):
    """NFC turns U+212A KELVIN SIGN into 'K': the name must be refused as sent, not mapped."""
    idp.people["sub-alice"]["preferred_username"] = "\u212aate"
    message = await refused(make(idp), {"Kate": FakeUser("Kate", None)})
    assert "U+212A KELVIN SIGN, which looks like 'K'" in message


@pytest.mark.parametrize(
    "new, existing",
    [
        ("torn", "tom"),
        ("Alice", "alice"),
        ("caro1", "carol"),
        ("aIice", "alice"),
        ("CLAVE", "dave"),
    ],
)
async def test_a_new_account_looking_like_an_existing_one_is_refused(
    crypt_key, idp, caplog, new, existing
):
    idp.people["sub-alice"]["preferred_username"] = new
    message = await refused(make(idp), {existing: FakeUser(existing, None)})
    assert f"your username {new!r} looks like the name of an existing account" in message
    assert "ask the hub admins" in message and existing not in message.replace(new, "")
    assert f"new account {new!r} looks like the existing account {existing!r}" in caplog.text


async def test_existing_accounts_and_different_looking_names_are_unaffected(crypt_key, idp):
    idp.people["sub-alice"]["preferred_username"] = "torn"
    torn = FakeUser("torn", {"aiinfn": {"issuer": ISSUER, "subject": "sub-alice"}})
    assert (await login(make(idp), {"torn": torn, "tom": FakeUser("tom", None)}))["name"] == "torn"
    idp.people["sub-alice"]["preferred_username"] = "a_b"
    others = {"ab": FakeUser("ab", None), "a.b": FakeUser("a.b", None)}
    assert (await login(make(idp), others))["name"] == "a_b"


async def test_an_id_token_about_someone_else_refuses(crypt_key, idp):
    idp.people["sub-mallory"] = {**idp.people["sub-alice"], "sub": "sub-mallory"}
    authenticator = make(idp)
    original = idp._issue

    def mismatched(subject):
        answer = original(subject)
        answer["id_token"] = jwt.encode({"iss": ISSUER, "aud": "hub", "sub": "sub-alice"}, "k" * 32)
        return answer

    idp._issue = mismatched
    idp.who = "sub-mallory"
    assert "do not match" in await refused(authenticator)


async def test_a_discovery_document_for_another_issuer_is_refused(crypt_key, idp, caplog):
    idp.document = {**DOCUMENT, "issuer": "https://evil.example.org/"}
    with pytest.raises(web.HTTPError) as error:
        await login(make(idp))
    assert error.value.status_code == 503
    assert (
        "identity provider cannot be reached or is misconfigured" in error.value.jupyterhub_message
    )
    assert "names issuer 'https://evil.example.org/'" in caplog.text


@pytest.mark.parametrize(
    "url, fault",
    [
        (USERINFO_URL, 500),
        (USERINFO_URL, 502),
        (USERINFO_URL, HTTPTimeoutError("Timeout during request")),
        (USERINFO_URL, HTTPStreamClosedError("Stream closed")),
        (USERINFO_URL, ConnectionRefusedError(111, "Connection refused")),
        (USERINFO_URL, b"<html>maintenance</html>"),
        (TOKEN_URL, 503),
        (TOKEN_URL, ConnectionResetError(104, "Connection reset by peer")),
    ],
)
async def test_a_failing_provider_during_login_shows_the_unavailable_page(
    crypt_key, idp, caplog, url, fault
):
    idp.faults[url] = fault
    message = await refused(make(idp), status=503)
    assert "identity provider cannot be reached or is misconfigured right now" in message
    assert "Login refused: the identity provider cannot be used (" in caplog.text


async def test_a_provider_refusing_the_code_asks_for_a_new_login(crypt_key, idp, caplog):
    idp.faults[TOKEN_URL] = 400
    message = await refused(make(idp))
    assert "the identity provider did not accept this login" in message
    assert "log in again" in message
    assert "answered HTTP 400" in caplog.text


async def test_explicit_endpoints_win_over_discovery(crypt_key, idp):
    authenticator = make(
        idp, token_url=TOKEN_URL, userdata_url=USERINFO_URL, authorize_url="https://x.example.org/a"
    )
    await authenticator.discover()
    assert authenticator.authorize_url == "https://x.example.org/a"


# -- refresh ---------------------------------------------------------------------------------


async def logged_in(authenticator) -> FakeUser:
    model = await login(authenticator)
    return FakeUser(model["name"], model["auth_state"])


async def test_refresh_with_a_fresh_token_updates_groups_and_keeps_the_token(crypt_key, idp):
    authenticator = make(idp)
    user = await logged_in(authenticator)
    idp.people["sub-alice"]["wlcg.groups"] = ["/cms-ml"]
    model = await authenticator.refresh_user(user)
    assert model["groups"] == ["cms-ml"]
    assert model["auth_state"]["access_token"] == user.auth_state["access_token"]
    assert (
        model["auth_state"]["token_response"]["expires_at"]
        == user.auth_state["token_response"]["expires_at"]
    )
    assert idp.grants == ["authorization_code"]


async def test_refresh_near_expiry_fetches_a_new_token(crypt_key, idp):
    authenticator = make(idp, access_token_refresh_margin=600)
    idp.expires_in = 300
    user = await logged_in(authenticator)
    model = await authenticator.refresh_user(user)
    assert idp.grants == ["authorization_code", "refresh_token"]
    assert model["auth_state"]["access_token"] == "access-token-2-secret"
    assert model["auth_state"]["refresh_token"] == "refresh-token-2-secret"


async def test_an_expired_token_rejected_by_userinfo_is_refreshed(crypt_key, idp):
    authenticator = make(idp)
    user = await logged_in(authenticator)
    del idp.valid[user.auth_state["access_token"]]
    model = await authenticator.refresh_user(user)
    assert model["auth_state"]["access_token"] == "access-token-2-secret"


async def test_a_revoked_refresh_token_needs_a_new_login(crypt_key, idp, caplog):
    authenticator = make(idp, access_token_refresh_margin=7200)
    user = await logged_in(authenticator)
    idp.revoked.add(user.auth_state["refresh_token"])
    with caplog.at_level(logging.DEBUG):
        assert await authenticator.refresh_user(user) is False
    assert "refused the refresh token of alice" in caplog.text


async def test_leaving_every_allowed_group_needs_a_new_login(crypt_key, idp):
    authenticator = make(idp)
    user = await logged_in(authenticator)
    idp.people["sub-alice"]["wlcg.groups"] = ["/other-experiment"]
    assert await authenticator.refresh_user(user) is False


async def test_a_groups_claim_gone_on_refresh_needs_a_new_login(crypt_key, idp):
    authenticator = make(idp)
    user = await logged_in(authenticator)
    del idp.people["sub-alice"]["wlcg.groups"]
    assert await authenticator.refresh_user(user) is False


async def test_refresh_needs_a_bound_auth_state(crypt_key, idp):
    authenticator = make(idp)
    assert await authenticator.refresh_user(FakeUser("alice", None)) is False
    assert await authenticator.refresh_user(FakeUser("alice", {"access_token": "x"})) is False


async def test_a_refresh_about_another_subject_needs_a_new_login(crypt_key, idp):
    authenticator = make(idp)
    user = await logged_in(authenticator)
    user.auth_state = {
        **user.auth_state,
        "aiinfn": {**user.auth_state["aiinfn"], "subject": "sub-other"},
    }
    assert await authenticator.refresh_user(user) is False


async def test_no_token_or_secret_reaches_the_log(crypt_key, idp, caplog):
    with caplog.at_level(logging.DEBUG):
        authenticator = make(idp, access_token_refresh_margin=7200)
        user = await logged_in(authenticator)
        await authenticator.refresh_user(user)
        idp.revoked.add(idp.issued[-2])
        await authenticator.refresh_user(
            FakeUser("alice", (await login(authenticator))["auth_state"])
        )
        idp.people["sub-alice"]["preferred_username"] = "-x"
        await refused(authenticator)
    assert caplog.text
    for secret in [*idp.issued, CLIENT_SECRET, "0" * 64, "authorization-code"]:
        assert secret not in caplog.text
