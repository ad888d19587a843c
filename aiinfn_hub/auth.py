"""AiInfnOAuthenticator: GenericOAuthenticator with INDIGO IAM defaults. Thin glue only.

The decisions (username, groups, admin, identity binding, e-mail, token expiry) live in
`claims.py`; this class wires them into OAuthenticator's hooks and keeps the tokens fresh.
"""

from __future__ import annotations

import asyncio
import json
import time
from inspect import isawaitable
from pathlib import Path
from typing import Any

from jupyterhub import orm
from jupyterhub.crypto import CryptKeeper, EncryptionUnavailable
from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.oauth2 import OAuthCallbackHandler, OAuthLoginHandler
from tornado import web
from tornado.httpclient import HTTPClientError
from traitlets import Integer, List, Set, Unicode, default

from . import catalog, claims, names, spawn_page
from .errors import UserError
from .platform_config import AiInfnPlatform
from .storage_config import AiInfnStorage

# Keys of our own in auth_state, beside OAuthenticator's (access_token, refresh_token, ...).
STATE_KEY = "aiinfn"


def provider_unavailable(log_detail: str = "") -> UserError:
    """The one message for a provider that cannot be used right now (details go to the log)."""
    return UserError(
        "the identity provider cannot be reached or is misconfigured right now; "
        "try again later or tell the hub admins",
        reason="idp-unavailable",
        log_detail=log_detail,
        status=503,
    )


def provider_failure(error: Exception) -> UserError:
    """The token or userinfo endpoint failed during a login. Unreachable, timing out (599),
    failing (5xx) or not answering JSON: the provider cannot be used right now. A 4xx is the
    provider refusing this login (an authorization code used twice or expired): start again."""
    if isinstance(error, HTTPClientError) and 400 <= error.code < 500:
        return claims.LoginRefused(
            f"the identity provider did not accept this login (it answered HTTP {error.code}); "
            "log in again, and tell the hub admins if it keeps happening",
            log_detail=f"the identity provider answered HTTP {error.code}",
        )
    return provider_unavailable(
        f"the identity provider cannot be used ({type(error).__name__}: {error})"
    )


def refusal(error: UserError) -> web.HTTPError:
    """A 403 page with the message for the user. No log_message: tornado would log the request
    URL with it, and on the callback that URL carries the authorization code."""
    http_error = web.HTTPError(error.status)
    http_error.jupyterhub_message = error.message
    return http_error


class _ScrubbedSummary:
    """Log lines name the path only; the query of an OAuth callback holds the code and state."""

    def _request_summary(self) -> str:
        return f"{self.request.method} {self.request.path} ({self.request.remote_ip})"

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, web.HTTPError):
            super().log_exception(typ, value, tb)
        else:
            self.log.error(
                "Uncaught exception %s", self._request_summary(), exc_info=(typ, value, tb)
            )


class AiInfnLoginHandler(_ScrubbedSummary, OAuthLoginHandler):
    async def get(self):
        try:
            await self.authenticator.discover()
        except UserError as error:
            raise refusal(error) from None
        super().get()


class AiInfnCallbackHandler(_ScrubbedSummary, OAuthCallbackHandler):
    pass


class AiInfnOAuthenticator(GenericOAuthenticator):
    """Log in with INDIGO IAM (OpenID Connect); tokens are kept in encrypted auth_state."""

    login_handler = AiInfnLoginHandler
    callback_handler = AiInfnCallbackHandler

    def get_handlers(self, app):
        # The spawn page answering 400, not 500, to text that is not UTF-8 (spawn_page.py).
        return [*spawn_page.handlers(), *super().get_handlers(app)]

    issuer = Unicode(
        config=True,
        help="""The OpenID issuer, exactly as its `.well-known/openid-configuration` names it
        (INFN Cloud: https://iam.cloud.infn.it/). The authorize, token and userinfo URLs come from
        there unless set explicitly. https only (plain http only on a loopback address).""",
    )
    group_claims = List(
        Unicode(),
        ["wlcg.groups", "groups"],
        config=True,
        help="""Claims holding the user's groups: IAM sends `groups` and, with the `wlcg.groups`
        scope, `wlcg.groups` ("/cms-ml/sub"). Every claim present is read, the leading '/' stripped,
        subgroups kept as "cms-ml/sub". No claim present, or one of the wrong shape, refuses the
        login.""",
    )
    system_groups = Set(
        Unicode(),
        config=True,
        help="""Groups that are not research projects but mean something to the hub (roles,
        services). They become hub groups with the projects, the allowed and admin groups, the keys
        of AiInfnPlatform.group_policies and AiInfnStorage.envs_curator_group; every other IdP group
        is dropped, so the hub's groups stay the ones it uses.""",
    )
    catalog_file = Unicode(
        config=True,
        help="""Catalog whose `projects:` section says which groups are research projects
        (default: AiInfnPlatform.catalog_file, so both read the same file).""",
    )
    access_token_refresh_margin = Integer(
        900,
        config=True,
        help="""Seconds: when the hub refreshes a user's auth (before a spawn, and on their requests
        or their servers' activity reports at most every auth_refresh_age) and the access token has
        less than this left, a new one is fetched with the refresh token. The spawner copies it to
        the token Secret at its next poll. Keep it above auth_refresh_age plus the servers' activity
        interval plus the poll and kubelet sync periods, so a running server's token never
        lapses.""",
    )
    _endpoints: claims.Endpoints | None = None
    _discovery_lock: asyncio.Lock | None = None
    _projects: frozenset[str] | None = None

    @default("login_service")
    def _default_login_service(self) -> str:
        return "INDIGO IAM"

    @default("scope")
    def _default_scope(self) -> list[str]:
        return ["openid", "profile", "email", "offline_access", "wlcg.groups"]

    @default("username_claim")
    def _default_username_claim(self) -> str:
        return "preferred_username"

    @default("enable_auth_state")
    def _default_enable_auth_state(self) -> bool:
        return True

    @default("manage_groups")
    def _default_manage_groups(self) -> bool:
        return True

    @default("refresh_pre_spawn")
    def _default_refresh_pre_spawn(self) -> bool:
        return True

    @default("auth_refresh_strict")  # JupyterHub >= 6.1; earlier versions are always strict
    def _default_auth_refresh_strict(self) -> bool:
        return True

    @default("catalog_file")
    def _default_catalog_file(self) -> str:
        return AiInfnPlatform(config=self.config).catalog_file

    @default("allowed_groups")
    def _default_allowed_groups(self) -> set[str]:
        return set(self.projects)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not self.enable_auth_state:
            raise SystemExit(
                "aiinfn-hub: AiInfnOAuthenticator.enable_auth_state must stay True: "
                "the tokens live there"
            )
        try:
            CryptKeeper.instance().check_available()
        except EncryptionUnavailable as error:
            raise SystemExit(
                "aiinfn-hub: AiInfnOAuthenticator keeps each user's tokens in encrypted "
                f"auth_state, but encryption is not available ({error}). Set JUPYTERHUB_CRYPT_KEY "
                "in the hub's environment to 32 random bytes in hex (openssl rand -hex 32)."
            ) from None
        try:
            claims.check_url(self.issuer, "AiInfnOAuthenticator.issuer (the IAM issuer URL)")
            _ = self.projects  # reading it loads and validates the catalog
        except (claims.DiscoveryError, catalog.CatalogError) as error:
            raise SystemExit(f"aiinfn-hub: invalid configuration: {error}") from None

    @property
    def projects(self) -> frozenset[str]:
        """The groups the catalog names as research projects."""
        if self._projects is None:
            self._projects = frozenset(catalog.load(Path(self.catalog_file)).projects)
        return self._projects

    # -- endpoints -------------------------------------------------------------------------

    async def discover(self) -> claims.Endpoints:
        """Read the issuer's OpenID configuration once; explicitly configured URLs win. Raises a 503
        UserError (details in the log) while the provider is unreachable or unusable."""
        if self._endpoints is None:
            self._discovery_lock = self._discovery_lock or asyncio.Lock()
            async with self._discovery_lock:
                if self._endpoints is None:
                    try:
                        document = await self.httpfetch(
                            claims.discovery_url(self.issuer),
                            "fetching OpenID configuration",
                            method="GET",
                            validate_cert=self.validate_server_cert,
                        )
                        found = claims.endpoints(document, self.issuer)
                    except (claims.DiscoveryError, HTTPClientError, OSError, ValueError) as error:
                        self.log.error("OpenID discovery for %s failed: %s", self.issuer, error)
                        raise provider_unavailable() from None
                    self.authorize_url = self.authorize_url or found.authorize
                    self.token_url = self.token_url or found.token
                    self.userdata_url = self.userdata_url or found.userinfo
                    self._endpoints = found
        return self._endpoints

    # -- usernames -------------------------------------------------------------------------

    def normalize_username(self, username: str) -> str:
        """No lowercasing (`Alice` and `alice` are two people); validate_username checks it."""
        return self.username_map.get(username, username)

    def validate_username(self, username: str) -> bool:
        try:
            return names.username(username) == username and super().validate_username(username)
        except names.InvalidName:
            return False

    def user_info_to_username(self, user_info: dict) -> str:
        return claims.username_of(user_info, self.username_claim)

    # -- login -----------------------------------------------------------------------------

    async def build_auth_state_dict(self, token_info: dict, user_info: dict) -> dict:
        token_info = {**token_info, "expires_at": claims.expires_at(token_info, time.time())}
        state = super().build_auth_state_dict(token_info, user_info)
        if isawaitable(state):
            state = await state
        who = claims.identity(
            user_info,
            issuer=self.issuer,
            username_claim=self.username_claim,
            group_claims=self.group_claims,
        )
        for why in who.ignored_groups:
            self.log.warning(
                "Ignoring a group of %s from the identity provider: %s", who.username, why
            )
        claims.check_id_token(
            token_info.get("id_token"),
            issuer=self.issuer,
            client_id=self.client_id,
            subject=who.subject,
        )
        state[STATE_KEY] = {
            "issuer": who.issuer,
            "subject": who.subject,
            "groups": list(who.groups),
            "email": who.email,
        }
        return state

    def _groups_in_config(self) -> set[str]:
        """Groups the rest of the hub configuration names: policy keys and the envs curators."""
        curators = self.config.get("AiInfnStorage", {}).get(
            "envs_curator_group", AiInfnStorage.class_traits()["envs_curator_group"].default()
        )
        return set(AiInfnPlatform(config=self.config).group_policies) | ({curators} - {""})

    def _access(self, auth_state: dict) -> claims.Access:
        return claims.access(
            auth_state[STATE_KEY]["groups"],
            projects=self.projects,
            system_groups=self.system_groups | self._groups_in_config(),
            allowed_groups=self.allowed_groups,
            admin_groups=self.admin_groups,
        )

    async def get_user_groups(self, auth_state: dict) -> set[str]:
        return set(self._access(auth_state).groups)

    async def authenticate(self, handler, data=None, **kwargs):
        try:
            await self.discover()
            try:
                model = await super().authenticate(handler, data, **kwargs)
            except (HTTPClientError, OSError, json.JSONDecodeError) as error:
                raise provider_failure(error) from None
            await self._check_account(handler, model)
        except UserError as error:
            self.log.warning("Login refused: %s", error.log_detail)
            raise refusal(error) from None
        return model

    async def _check_account(self, handler, model: dict) -> None:
        """An existing account must be this person's (or unbound, then bound now); a new one must
        not look like any existing one."""
        who = model["auth_state"][STATE_KEY]
        user = handler.find_user(model["name"])
        if user is None:
            existing = (name for (name,) in handler.db.query(orm.User.name))
            claims.check_new_username(model["name"], existing)
            return
        identity = claims.Identity(
            who["issuer"], who["subject"], model["name"], tuple(who["groups"]), who["email"]
        )
        if not claims.check_binding(claims.binding(await user.get_auth_state()), identity):
            self.log.info(
                "Binding existing user %s to their identity at %s on first login",
                model["name"],
                who["issuer"],
            )

    async def check_allowed(self, username: str, auth_model: dict) -> bool:
        if await super().check_allowed(username, auth_model):
            return True
        error = claims.LoginRefused(
            "your groups at the identity provider give no access to this hub; ask to join one "
            f"of its projects ({', '.join(sorted(self.projects)) or 'none configured'})",
            log_detail=f"{username!r} is in no allowed group",
        )
        self.log.warning("Login refused: %s", error.log_detail)
        raise refusal(error)

    # -- refresh ---------------------------------------------------------------------------

    async def refresh_user(self, user, handler=None, **kwargs):
        """Fresh tokens and groups, or False (log in again). Groups, admin and entry are decided
        again, so leaving a project or the hub's groups takes effect here."""
        auth_state = await user.get_auth_state()
        bound = claims.binding(auth_state)
        if bound is None:
            self.log.info("No tokens for %s; a new login is needed", user.name)
            return False
        try:
            await self.discover()
            expiry = claims.expires_at(auth_state.get("token_response") or {}, time.time())
            if claims.needs_refresh(expiry, time.time(), self.access_token_refresh_margin):
                model = await self._refreshed(user, auth_state)
            else:
                model = await super().refresh_user(user, handler, **kwargs)
        except UserError as error:
            self.log.warning(
                "Refresh for %s refused, a new login is needed: %s", user.name, error.log_detail
            )
            return False
        except (
            HTTPClientError,
            OSError,
            ValueError,
        ) as error:  # unreachable, or answers that are not JSON
            self.log.warning("Refresh for %s failed, a new login is needed: %s", user.name, error)
            return False
        if not isinstance(model, dict):
            return model
        state = model["auth_state"][STATE_KEY]
        if (state["issuer"], state["subject"]) != bound:
            self.log.warning(
                "Refresh for %s returned another subject; a new login is needed", user.name
            )
            return False
        if not (
            self.allow_all
            or model["admin"]
            or user.name in self.allowed_users
            or self._access(model["auth_state"]).allowed
        ):
            self.log.info("%s is no longer in an allowed group; a new login is needed", user.name)
            return False
        return model

    async def _refreshed(self, user, auth_state: dict) -> dict | bool:
        """A new access token from the refresh token, or False if the provider refuses it."""
        refresh_token = auth_state.get("refresh_token")
        if not refresh_token:
            return False
        try:
            token_info = await self.get_token_info(
                None, self.build_refresh_token_request_params(refresh_token)
            )
        except (HTTPClientError, web.HTTPError) as error:
            self.log.info(
                "The identity provider refused the refresh token of %s (%s); a new login is needed",
                user.name,
                getattr(error, "code", None) or error.status_code,
            )
            return False
        token_info.setdefault("refresh_token", refresh_token)
        self.log.info("Refreshed the access token of %s", user.name)
        return await self._token_to_auth_model(token_info)
