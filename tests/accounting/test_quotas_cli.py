"""`aiinfn-hub quota show|raise|reset` against a real PostgreSQL, with a hub configuration file
as the hub pod has it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

# ruff: noqa: E402 (the imports below need psycopg)
psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (docs/accounting.md)")

from psycopg import AsyncConnection

from aiinfn_hub import admin_cli
from aiinfn_hub.accounting import ledger
from aiinfn_hub.accounting.events import Allocation, AllocationEvent
from aiinfn_hub.accounting.settings import URL_ENV
from tests.postgres import Postgres, create_database

QUOTAS = {
    "users-weekly": {"scope": "user", "period": "week", "hours": 50},
    "cms-a100": {"scope": "project", "subject": "cms-ml", "model": "a100", "period": "month",
                 "hours": 500},
}  # fmt: skip


@pytest.fixture
def hub_config(postgres: Postgres, tmp_path, monkeypatch) -> tuple[str, str]:
    """A hub configuration with accounting and the quotas; its path and the ledger's DSN."""
    monkeypatch.delenv(URL_ENV, raising=False)
    name = create_database(postgres)
    ledger.upgrade(postgres.url(name))
    path = tmp_path / "jupyterhub_config.py"
    path.write_text(
        f"c.AiInfnAccounting.database_url = {postgres.url(name)!r}\n"
        f"c.AiInfnAccounting.quotas = {QUOTAS!r}\n"
    )
    return str(path), postgres.dsn(name)


async def used(dsn: str, hours: int) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    held = Allocation("cli-1", "alice", "", "t4", "notebook", "", 1, 1000)
    events = [AllocationEvent(held, "start", now - timedelta(hours=hours))]
    async with await AsyncConnection.connect(dsn) as connection:
        await ledger.insert(connection, events)
        await connection.commit()


def quota(config: str, *args: str) -> int:
    return admin_cli.main(["quota", "--hub-config", config, *args])


def test_show_raise_and_reset(hub_config, capsys):
    config, dsn = hub_config
    assert quota(config, "show", "--user", "alice") == 0
    assert "user alice has used 0.0 of its 50 GPU-hours this week" in capsys.readouterr().out
    assert quota(config, "raise", "--user", "alice", "--period", "week", "--hours", "20") == 0
    assert "of its 70 GPU-hours this week" in capsys.readouterr().out
    asyncio.run(used(dsn, 2))  # a T4 for 2 hours, still running: from a reset on, 0 seconds
    assert quota(config, "reset", "--user", "alice", "--period", "week", "--by", "ada") == 0
    out = capsys.readouterr().out
    assert "user alice has used 0.0 of its 70 GPU-hours this week" in out
    assert "70.0 hours left" in out
    assert quota(config, "show", "--project", "cms-ml") == 0
    assert "project cms-ml has used 0.0 of its 500 hours of a100 this month" in (
        capsys.readouterr().out
    )


def test_a_quota_that_is_not_configured_is_refused_naming_those_that_are(hub_config, capsys):
    config, _ = hub_config
    assert quota(config, "raise", "--user", "bob", "--model", "t4", "--period", "week",
                 "--hours", "1") == 1  # fmt: skip
    assert "no such quota for that subject (its quotas: all accelerators/week)" in (
        capsys.readouterr().err
    )
    assert quota(config, "raise", "--user", "bob", "--period", "week", "--hours", "-1") == 1
    assert "--hours must be more than 0" in capsys.readouterr().err


def test_a_configuration_without_quotas_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(URL_ENV, raising=False)
    path = tmp_path / "jupyterhub_config.py"
    path.write_text("c.AiInfnAccounting.database_url = 'postgresql://a:s3cret@db/x'\n")
    assert quota(str(path), "show", "--user", "alice") == 2
    err = capsys.readouterr().err
    assert "no quota is configured (c.AiInfnAccounting.quotas)" in err and "s3cret" not in err
