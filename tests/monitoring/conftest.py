"""The monitoring tests' fixtures: the pytest process's real Prometheus (tests/prometheus.py)."""

from tests.prometheus import prometheus  # noqa: F401 (the session's Prometheus fixture)
