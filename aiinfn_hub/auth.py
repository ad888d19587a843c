"""AiInfnOAuthenticator: GenericOAuthenticator with INDIGO IAM defaults. Thin glue only."""

from __future__ import annotations

from oauthenticator.generic import GenericOAuthenticator
from traitlets import default


class AiInfnOAuthenticator(GenericOAuthenticator):
    """Log in with INDIGO IAM (OpenID Connect); tokens are kept in encrypted auth_state."""

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
