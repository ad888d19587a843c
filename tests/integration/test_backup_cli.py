"""`aiinfn backup` in a terminal, against the real backup service behind a real JupyterHub (the
hub, the service and its Jobs as tests/integration/test_backup_api.py runs them): alice lists
her archives, browses one, restores her deleted notebook into ~/restored/<archive>/, is told
when it is there already, and is refused bob's home. The command runs as a process with the
environment of a notebook terminal (a token of alice's, $JUPYTERHUB_USER, $AIINFN_BACKUP_URL)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from aiinfn_hub.identity import IdentityStore
from aiinfn_hub.services.backup import paths
from tests import backup_cluster
from tests.backup_cluster import PREFIX
from tests.helpers import wait_until
from tests.integration.test_backup_api import Env
from tests.integration.test_backup_api import env as env  # the same hub and service

pytestmark = pytest.mark.integration


def aiinfn(env: Env, *argv: str) -> subprocess.CompletedProcess:
    """`aiinfn ARGV` as alice in a notebook terminal."""
    terminal = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTERHUB_", "AIINFN_"))}
    terminal.update(
        {
            "JUPYTERHUB_API_TOKEN": env.tokens["alice"],
            "JUPYTERHUB_USER": "alice",
            "AIINFN_BACKUP_URL": f"{env.hub.url}{PREFIX}",
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "aiinfn_hub.cli", *argv],
        env=terminal,
        capture_output=True,
        text=True,
        timeout=backup_cluster.JOB_LIMIT + 60,
    )


async def test_alice_restores_her_notebook_from_a_terminal(env: Env, api_client):
    identity = await IdentityStore(api_client, env.hub.namespace).identity("alice", ["cms-ml"])
    outside = env.world.target.parent / "cli-other-project"
    outside.mkdir()
    home = backup_cluster.make_home(env.world, "alice", identity.uid, outside)
    status, started, _ = await env.api(
        "alice", "POST", "api/backups", {"kind": "home", "name": "alice"}
    )
    assert status == 202, started
    done = await wait_until(
        lambda: env.finished("alice", started["id"]), "the backup", limit=backup_cluster.JOB_LIMIT
    )
    assert done["state"] == "succeeded", done
    archive = started["archive"]

    listed = await asyncio.to_thread(aiinfn, env, "backup", "list")
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()] == [archive]
    browsed = await asyncio.to_thread(aiinfn, env, "backup", "ls", archive, "work")
    assert browsed.returncode == 0, browsed.stderr
    assert [line.split()[-1] for line in browsed.stdout.splitlines()] == [
        "work/data.bin",
        "work/deep/",
    ]

    os.remove(home / "notebook.ipynb")
    restored = await asyncio.to_thread(aiinfn, env, "backup", "restore", archive, "notebook.ipynb")
    assert restored.returncode == 0, restored.stderr
    destination = home / paths.RESTORED_FOLDER / archive / "notebook.ipynb"
    assert restored.stdout.rstrip().endswith("/notebook.ipynb: succeeded"), restored.stdout
    assert destination.read_text() == '{"cells": [], "metadata": {}}\n'

    again = await asyncio.to_thread(aiinfn, env, "backup", "restore", archive, "notebook.ipynb")
    assert again.returncode == 1 and again.stdout == ""
    assert "already exists; nothing was restored" in again.stderr.splitlines()[-1]
    assert destination.read_text() == '{"cells": [], "metadata": {}}\n'

    refused = await asyncio.to_thread(aiinfn, env, "backup", "list", "--user", "bob")
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith("aiinfn: ") and "(HTTP 403)" in refused.stderr
