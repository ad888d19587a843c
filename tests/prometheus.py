"""A real Prometheus (Debian's package, installed by ./dev) for the tests, on the loopback.

The server itself is aiinfn_dev.prometheus (shared with the demo). One per pytest process (the
`prometheus` fixture, session-scoped): it scrapes every second and evaluates
helm-values/prometheus-rules.yaml every second. Its targets are file-discovered, so a test
module adds its hub, job service and storage exporter while it runs (`Prometheus.scrape`)
without a restart. The hub's and the job service's jobs authenticate as the hub service
`prometheus` with one session token (the test hubs register that service with
jupyterhub_config.d/50-metrics.py: `hub_lines` here); the storage exporter takes none.
`storage_exporter` runs `python -m aiinfn_hub.storage_exporter` on the loopback.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from aiinfn_dev import prometheus as server
from aiinfn_dev.prometheus import JOBS, REPO, RULES, TOKEN_ENV, Prometheus, storage_exporter

__all__ = ["AUTHENTICATED", "JOBS", "REPO", "RULES", "Prometheus", "hub_lines", "prometheus"]
__all__ += ["start", "stop", "storage_exporter"]
AUTHENTICATED = ("hub", "jobs")
stop = server.stop


def hub_lines(token: str) -> list[str]:
    """Test-hub config lines that register the service `prometheus` with this token and its
    role, as shipped: 50-metrics.py again, after the test config replaced the lists."""
    return [
        f"import os; os.environ[{TOKEN_ENV!r}] = {token!r}",
        f"load_subconfig({str(REPO / 'jupyterhub_config.d' / '50-metrics.py')!r})",
    ]


def start(folder) -> Prometheus:
    """The tests' Prometheus (JOBS, a second apart); the test skips where none is installed."""
    try:
        return server.start(folder)
    except server.Unavailable as error:
        pytest.skip(str(error))


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory) -> Iterator[Prometheus]:
    """The pytest process's Prometheus (each xdist worker has its own)."""
    running = start(tmp_path_factory.mktemp("prometheus"))
    try:
        yield running
    finally:
        stop(running)
