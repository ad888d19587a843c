"""The demo's accounting and monitoring, beside its hub, on the loopback only.

- PostgreSQL (postgres.py) with the ledger's database `aiinfn_accounting`, its data in the
  demo's state folder, so the ledger outlasts a demo's restart; as root, where the account
  PostgreSQL runs as cannot reach that folder (root's home), in a fresh folder under /tmp
  removed at exit. The hub gets its URL, which turns accounting on.
- The storage exporter over the demo's home and project folders.
- Prometheus (prometheus.py) with helm-values/prometheus-rules.yaml, scraping the hub, the job
  and backup services (as the hub service `prometheus`, whose token the hub gets) and the
  exporter every 5 seconds; its data in the state folder.

Everything is stopped by pid when the demo's ExitStack closes.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from aiinfn_hub.accounting.settings import URL_ENV

from . import postgres, prometheus
from .devcluster.errors import DevClusterError

DATABASE = "aiinfn_accounting"
JOBS = {"hub": "/hub/metrics", **prometheus.SERVICE_JOBS, "storage": "/metrics"}
INTERVAL = "5s"
HOME_CLAIM = "aiinfn-home"
PROJECT_CLAIMS = "aiinfn-project-"


@dataclass
class Monitoring:
    environment: dict[str, str]  # the hub's: the ledger's URL, the Prometheus service's token
    urls: dict[str, str]  # what the demo prints


def start(
    stack: contextlib.ExitStack, state: Path, folders: dict[str, Path], hub: str
) -> Monitoring:
    """Start the three for a hub that will answer at `hub` (host:port); stopped by `stack`."""
    try:
        ledger = _ledger(stack, state)
        homes, projects = storage_roots(folders)
        log = state / "storage-exporter.log"
        exporter = stack.enter_context(
            prometheus.storage_exporter(homes, projects, log, rate=0, interval=30)
        )
        server = prometheus.start(state / "prometheus", JOBS, interval=INTERVAL)
    except (postgres.Unavailable, prometheus.Unavailable) as error:
        raise DevClusterError(str(error)) from None
    stack.callback(prometheus.stop, server)
    for job in JOBS:
        server.scrape(job, [exporter if job == "storage" else hub])
    return Monitoring(
        {URL_ENV: ledger, prometheus.TOKEN_ENV: server.token},
        {"prometheus": server.url, "accounting ledger (psql)": ledger},
    )


def storage_roots(folders: dict[str, Path]) -> tuple[Path, Path]:
    """The folders standing in for the homes' export and the projects' (one for all)."""
    projects = {f for claim, f in folders.items() if claim.startswith(PROJECT_CLAIMS)}
    if HOME_CLAIM not in folders or len(projects) != 1:
        raise DevClusterError(f"unexpected storage claims for the exporter: {sorted(folders)}")
    return folders[HOME_CLAIM], projects.pop()


def _ledger(stack: contextlib.ExitStack, state: Path) -> str:
    """A running PostgreSQL with the ledger's database; its URL (no password: trust
    authentication, on the loopback only)."""
    folder = state / "postgres"
    if not postgres.reachable(folder):
        folder = Path(tempfile.mkdtemp(prefix="aiinfn-demo-postgres-"))
        stack.callback(shutil.rmtree, folder, True)
    server = postgres.initdb(folder)
    postgres.start(server)
    stack.callback(postgres.stop, server)
    name = postgres.create_database(server, DATABASE)
    return f"postgresql://{postgres.SUPERUSER}@127.0.0.1:{server.port}/{name}"
