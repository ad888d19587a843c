"""The job service's metrics (handlers.ServiceMetrics) and the services' health check
(cluster.HealthCheck)."""

from __future__ import annotations

import asyncio

from aiinfn_hub.services import cluster
from aiinfn_hub.services.jobs import handlers


def test_submissions_and_refusals_in_a_registry_of_their_own():
    first, second = handlers.ServiceMetrics(), handlers.ServiceMetrics()  # no clash
    first.submissions.labels(kind="job", outcome="created").inc()
    first.refused("too-many-jobs")
    first.refused("Not A Reason {}")
    text = first.exposition().decode()
    assert 'aiinfn_jobs_submissions_total{kind="job",outcome="created"} 1.0' in text
    assert 'aiinfn_jobs_refusals_total{reason="too-many-jobs"} 1.0' in text
    assert 'aiinfn_jobs_refusals_total{reason="other"} 1.0' in text
    assert 'aiinfn_jobs_submissions_total{kind="job",outcome="created"} 0.0' in (
        second.exposition().decode()
    )
    assert 'aiinfn_jobs_submissions_total{kind="resubmit",outcome="replayed"} 0.0' in text


async def test_the_health_check_asks_the_api_server_once_per_period(monkeypatch):
    calls = []

    async def probe():
        calls.append(1)
        await asyncio.sleep(0)
        if len(calls) > 1:
            raise ConnectionError("API server down")

    now = [100.0]
    monkeypatch.setattr(cluster.time, "monotonic", lambda: now[0])
    check = cluster.HealthCheck(probe)
    assert await asyncio.gather(check(), check(), check()) == [True, True, True]
    assert len(calls) == 1
    now[0] += cluster.HEALTH_CACHE_SECONDS
    assert await check() is False
    assert len(calls) == 2
