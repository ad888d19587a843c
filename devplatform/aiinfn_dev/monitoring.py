"""The demo's accounting and monitoring, beside its hub, on the loopback only.

- PostgreSQL (postgres.py) with the ledger's database `aiinfn_accounting`, its data in the
  demo's state folder, so the ledger outlasts a demo's restart; as root, where the account
  PostgreSQL runs as cannot reach that folder (root's home), in a fresh folder under /tmp
  removed at exit. The hub gets its URL, which turns accounting on.
- The storage exporter over the demo's home and project folders.
- The stand-in DCGM exporter (dcgm.py) for the demo namespace's GPU pods (kwok's GPUs): each
  GPU reports BUSY percent, or what its pod's annotation UTILISATION says (`kubectl annotate`:
  how a demo user, or a test, makes a GPU idle for the culler's GPU rule, docs/culling.md).
- Prometheus (prometheus.py) with helm-values/prometheus-rules.yaml, scraping the hub, the job
  and backup services (as the hub service `prometheus`, whose token the hub gets), the storage
  exporter and the DCGM stand-in every 5 seconds; its data in the state folder.

Everything is stopped by pid when the demo's ExitStack closes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiinfn_hub.accounting.settings import URL_ENV

from . import dcgm, postgres, prometheus
from .devcluster.errors import DevClusterError

log = logging.getLogger("aiinfn_dev.monitoring")

DATABASE = "aiinfn_accounting"
EXPORTERS = {"storage": "/metrics", "dcgm": "/metrics"}
JOBS = {"hub": "/hub/metrics", **prometheus.SERVICE_JOBS, **EXPORTERS}
INTERVAL = "5s"
HOME_CLAIM = "aiinfn-home"
PROJECT_CLAIMS = "aiinfn-project-"
# The demo's simulated GPUs: busy unless their pod says otherwise, so that the culler's GPU
# rule stops only the servers a demo user (or a test) makes idle.
UTILISATION = "dev.aiinfn.infn.it/gpu-utilisation"
BUSY = 60.0


@dataclass
class Monitoring:
    environment: dict[str, str]  # the hub's: the ledger's URL, the Prometheus service's token
    urls: dict[str, str]  # what the demo prints
    prometheus: str  # Prometheus' base URL, for the culler's GPU rule


def start(
    stack: contextlib.ExitStack,
    state: Path,
    folders: dict[str, Path],
    hub: str,
    gpus: tuple[str, str],
) -> Monitoring:
    """Start them for a hub that will answer at `hub` (host:port), the DCGM stand-in for the
    GPU pods of `gpus` (kubeconfig, namespace); stopped by `stack`."""
    try:
        ledger = _ledger(stack, state)
        homes, projects = storage_roots(folders)
        log_file = state / "storage-exporter.log"
        targets = {
            "storage": stack.enter_context(
                prometheus.storage_exporter(homes, projects, log_file, rate=0, interval=30)
            ),
            "dcgm": stack.enter_context(simulated_gpus(*gpus)).target,
        }
        server = prometheus.start(state / "prometheus", JOBS, interval=INTERVAL)
    except (postgres.Unavailable, prometheus.Unavailable) as error:
        raise DevClusterError(str(error)) from None
    stack.callback(prometheus.stop, server)
    for job in JOBS:
        server.scrape(job, [targets.get(job, hub)])
    return Monitoring(
        {URL_ENV: ledger, prometheus.TOKEN_ENV: server.token},
        {"prometheus": server.url, "accounting ledger (psql)": ledger},
        server.url,
    )


def utilisation(pod: Mapping[str, Any]) -> float:
    """A demo GPU pod's utilisation in percent: its annotation's number, else BUSY."""
    value = (pod.get("metadata", {}).get("annotations") or {}).get(UTILISATION)
    try:
        return min(100.0, max(0.0, float(value))) if value is not None else BUSY
    except ValueError:
        return BUSY


def simulate(exporter: dcgm.DcgmStandIn, pods: list[Mapping[str, Any]]) -> None:
    """Serve the running GPU pods of `pods`, each at its utilisation (utilisation())."""
    exporter.follow(pods, utilisation=BUSY)
    for pod in pods:
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        served = exporter.pods.get(key)
        if served is not None:
            values = [utilisation(pod)] * len(served.utilisation)
            exporter.set(dataclasses.replace(served, utilisation=values))


def simulated_gpus(
    kubeconfig: str, namespace: str, every: float = 2.0
) -> contextlib.AbstractContextManager[dcgm.DcgmStandIn]:
    """The DCGM stand-in on a free loopback port, serving the GPU pods of `namespace` (listed
    every `every` seconds) at their utilisation (simulate())."""
    return dcgm.following(kubeconfig, namespace, every, observe=simulate)


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
