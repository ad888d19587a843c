"""DemoAuthenticator: shared-password login for `aiinfn-hub demo` only.

It refuses to load unless demo mode is on (AIINFN_DEMO_MODE=1, set by `aiinfn-hub demo`) and
the hub listens on a loopback address, so a demo configuration copied to a server cannot open it.
"""

from __future__ import annotations

import ipaddress
import os
from urllib.parse import urlparse

from jupyterhub.authenticators.shared import SharedPasswordAuthenticator

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


class DemoAuthenticator(SharedPasswordAuthenticator):
    """Demo users log in with the password that `aiinfn-hub demo` prints."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        if os.environ.get(DEMO_MODE_ENV) != "1":
            raise DemoModeError(
                f"DemoAuthenticator only runs under `aiinfn-hub demo` ({DEMO_MODE_ENV}=1); "
                "configure AiInfnOAuthenticator for a real deployment"
            )
        self._check_bind_url(getattr(self.parent, "bind_url", "") or "")

    @staticmethod
    def _check_bind_url(bind_url: str) -> None:
        host = urlparse(bind_url).hostname or ""
        if bind_url and not _is_loopback(host):
            raise DemoModeError(
                f"DemoAuthenticator refuses to serve on {host!r}: the demo listens on 127.0.0.1 only"
            )
