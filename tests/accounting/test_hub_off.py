"""A hub without c.AiInfnAccounting is the hub it was: no accounting series, no inventory watch
before the first spawn page, nothing about accounting in its log. Needs no psycopg, so it runs
under every JupyterHub the tests cover."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest

from aiinfn_hub.accounting import settings
from tests.hub import Hub, hub_in_namespace

pytestmark = pytest.mark.integration


def scrape(hub: Hub) -> str:
    """The hub's /hub/metrics, read with the tests' service token (admin: read:metrics)."""
    request = urllib.request.Request(
        f"{hub.url}/hub/metrics", headers={"Authorization": f"token {hub.token}"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.read().decode()


async def test_without_the_setting_nothing_changes(devcluster, api_client, tmp_path, monkeypatch):
    monkeypatch.delenv(settings.URL_ENV, raising=False)
    kubeconfig, _ = devcluster
    async with hub_in_namespace(api_client, kubeconfig, tmp_path, {}, {}) as plain:
        text = await asyncio.to_thread(scrape, plain)
        assert "aiinfn_accounting_" not in text
        # The inventory watch still starts with the first spawn page, not at hub start.
        assert "aiinfn_inventory_watch_synced{" not in text
        assert "accounting" not in plain.log()
