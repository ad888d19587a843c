"""c.AiInfnAccounting: off unless set, the URL from the environment by default, a bad URL
refused naming the key and never the URL, and nothing of psycopg imported while it is off."""

from __future__ import annotations

import subprocess
import sys

import pytest
from traitlets import TraitError
from traitlets.config import Config

from aiinfn_hub.accounting.settings import (
    URL_ENV,
    AiInfnAccounting,
    libpq_url,
    sqlalchemy_url,
)

SECRET = "s3cr%40t"
URL = f"postgresql://acct:{SECRET}@db.example:5432/accounting"


def test_unset_is_off_and_the_environment_sets_it(monkeypatch):
    monkeypatch.delenv(URL_ENV, raising=False)
    assert AiInfnAccounting().database_url == ""
    monkeypatch.setenv(URL_ENV, URL)
    assert AiInfnAccounting().database_url == URL
    config = Config({"AiInfnAccounting": {"database_url": ""}})
    assert AiInfnAccounting(config=config).database_url == ""  # the config wins


@pytest.mark.parametrize(
    "bad",
    [
        f"mysql://acct:{SECRET}@db.example/accounting",
        f"postgresql://acct:{SECRET}@db.example:port/accounting",
        f"postgresql://acct:{SECRET}@/accounting",
        f"postgresql://acct:{SECRET}@db.example",
    ],
)
def test_a_bad_url_is_refused_without_showing_it(bad: str):
    with pytest.raises(TraitError) as refused:
        AiInfnAccounting(config=Config({"AiInfnAccounting": {"database_url": bad}}))
    assert "AiInfnAccounting.database_url" in str(refused.value)
    assert SECRET not in str(refused.value)


def test_the_url_for_alembic_and_for_libpq():
    assert sqlalchemy_url(URL) == f"postgresql+psycopg://acct:{SECRET}@db.example:5432/accounting"
    assert libpq_url(sqlalchemy_url(URL)) == URL


def test_the_hub_start_hook_imports_no_database_driver():
    code = (
        "import sys, aiinfn_hub.accounting.hub_start as h; h.start_at_hub_start(); "
        "assert not {'psycopg', 'sqlalchemy', 'alembic'} & set(sys.modules), sys.modules.keys()"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
