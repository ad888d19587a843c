"""The demo login exists only in demo mode and only on a loopback address."""

import pytest
from traitlets.config import Config

from aiinfn_hub.demo_auth import DEMO_MODE_ENV, DemoAuthenticator, DemoModeError


def _config():
    c = Config()
    c.DemoAuthenticator.user_password = "a-long-demo-password"
    c.DemoAuthenticator.allowed_users = {"alice"}
    return c


def test_refuses_outside_demo_mode(monkeypatch):
    monkeypatch.delenv(DEMO_MODE_ENV, raising=False)
    with pytest.raises(DemoModeError, match="only runs under `aiinfn-hub demo`"):
        DemoAuthenticator(config=_config())


def test_refuses_a_public_bind_address(monkeypatch):
    monkeypatch.setenv(DEMO_MODE_ENV, "1")
    with pytest.raises(DemoModeError, match="refuses to serve on '0.0.0.0'"):
        DemoAuthenticator._check_bind_url("http://0.0.0.0:8000")


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://localhost:8000/", "http://[::1]:8000"])
def test_loopback_bind_addresses_are_fine(monkeypatch, url):
    monkeypatch.setenv(DEMO_MODE_ENV, "1")
    DemoAuthenticator._check_bind_url(url)


async def test_demo_user_logs_in_with_the_shared_password(monkeypatch):
    monkeypatch.setenv(DEMO_MODE_ENV, "1")
    authenticator = DemoAuthenticator(config=_config())
    assert await authenticator.get_authenticated_user(None, {"username": "alice", "password": "a-long-demo-password"})
    assert not await authenticator.get_authenticated_user(None, {"username": "alice", "password": "wrong"})
