"""The demo login exists only in demo mode, only on a loopback address, only for demo users."""

import pytest
from aiinfn_dev.demo_auth import DEMO_MODE_ENV, DemoAuthenticator, DemoModeError
from traitlets.config import Config

PASSWORD = "a-long-demo-password"


def _config(password=PASSWORD):
    c = Config()
    c.DemoAuthenticator.password = password
    c.DemoAuthenticator.demo_users = {"alice": {"admin": True, "groups": ["cms-ml"]}, "bob": {}}
    return c


def test_refuses_outside_demo_mode(monkeypatch):
    monkeypatch.delenv(DEMO_MODE_ENV, raising=False)
    with pytest.raises(DemoModeError, match="only runs under `aiinfn-dev demo`"):
        DemoAuthenticator(config=_config())


def test_refuses_a_short_password(monkeypatch):
    monkeypatch.setenv(DEMO_MODE_ENV, "1")
    with pytest.raises(DemoModeError, match="at least 12 characters"):
        DemoAuthenticator(config=_config("short"))


def test_refuses_a_public_bind_address():
    with pytest.raises(DemoModeError, match="refuses to serve on '0.0.0.0'"):
        DemoAuthenticator._check_bind_url("http://0.0.0.0:8000")


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000", "http://localhost:8000/", "http://[::1]:8000"]
)
def test_loopback_bind_addresses_are_fine(url):
    DemoAuthenticator._check_bind_url(url)


async def test_demo_users_log_in_with_groups_and_admin_flag(monkeypatch):
    monkeypatch.setenv(DEMO_MODE_ENV, "1")
    authenticator = DemoAuthenticator(config=_config())
    assert await authenticator.authenticate(None, {"username": "alice", "password": PASSWORD}) == {
        "name": "alice",
        "admin": True,
        "groups": ["cms-ml"],
    }
    assert await authenticator.authenticate(None, {"username": "bob", "password": PASSWORD}) == {
        "name": "bob",
        "admin": False,
        "groups": [],
    }
    assert (
        await authenticator.authenticate(None, {"username": "alice", "password": "wrong"}) is None
    )
    assert (
        await authenticator.authenticate(None, {"username": "mallory", "password": PASSWORD})
        is None
    )
    assert authenticator.allowed_users == {"alice", "bob"}
