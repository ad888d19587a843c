"""DemoAuthenticator: a password login with fixed demo users, for `aiinfn-dev demo` only.

It refuses to load unless demo mode is on (AIINFN_DEMO_MODE=1, set by `aiinfn-dev demo`) and
the hub listens on a loopback address, so a demo configuration copied to a server cannot open it.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from urllib.parse import urlparse

from jupyterhub.auth import Authenticator
from traitlets import Dict, Unicode, default

from aiinfn_hub import spawn_page

DEMO_MODE_ENV = "AIINFN_DEMO_MODE"


class DemoModeError(RuntimeError):
    """The demo login was configured outside demo mode."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class DemoAuthenticator(Authenticator):
    """Demo users log in with the one password that `aiinfn-dev demo` prints."""

    def get_handlers(self, app):
        # The spawn page answering 400, not 500, to text that is not UTF-8 (spawn_page.py).
        return [*spawn_page.handlers(), *super().get_handlers(app)]

    demo_users = Dict(
        value_trait=Dict(),
        key_trait=Unicode(),
        config=True,
        help="""Demo users by name: {"alice": {"admin": true, "groups": ["cms-ml"]}}.
        Only these names can log in; their groups and admin flag are set at each login.""",
    )
    password = Unicode(
        config=True,
        help="The demo password (at least 12 characters); "
        "`aiinfn-dev demo` makes a random one per run.",
    )

    @default("manage_groups")
    def _default_manage_groups(self) -> bool:
        return True

    @default("allow_all")
    def _default_allow_all(self) -> bool:
        return False

    @default("allowed_users")
    def _default_allowed_users(self) -> set[str]:
        return set(self.demo_users)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        if os.environ.get(DEMO_MODE_ENV) != "1":
            raise DemoModeError(
                f"DemoAuthenticator only runs under `aiinfn-dev demo` ({DEMO_MODE_ENV}=1); "
                "configure AiInfnOAuthenticator for a real deployment"
            )
        if len(self.password) < 12:
            raise DemoModeError("DemoAuthenticator.password must be at least 12 characters")
        self._check_bind_url(getattr(self.parent, "bind_url", "") or "")

    @staticmethod
    def _check_bind_url(bind_url: str) -> None:
        host = urlparse(bind_url).hostname or ""
        if bind_url and not _is_loopback(host):
            raise DemoModeError(
                f"DemoAuthenticator refuses to serve on {host!r}: "
                "the demo listens on 127.0.0.1 only"
            )

    async def authenticate(self, handler, data):
        username = data.get("username", "")
        user = self.demo_users.get(username)
        if user is None or not hmac.compare_digest(
            data.get("password", "").encode(), self.password.encode()
        ):
            return None
        return {
            "name": username,
            "admin": bool(user.get("admin")),
            "groups": list(user.get("groups", [])),
        }
