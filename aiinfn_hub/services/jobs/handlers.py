"""HTTP side of the job service: the REST API under api/, the jobs page, the page's cancel form,
and for the platform: metrics (a hub token with `read:metrics`) and health (public, no detail).

Every handler takes the caller from the hub; bodies are parsed by the strict request models and
nothing identity-like is read from them. Each user has a token bucket (429 with Retry-After).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest
from tornado import web

from ...errors import UserError
from .. import pages
from ..base import OpenApiHandler
from ..cluster import ClusterHandler, HealthHandler, MetricsHandler
from .operations import JobService
from .request import CloneRequest, JobRequest, ResubmitRequest, parse
from .status import FINAL_STATES

log = logging.getLogger(__name__)
MAX_LOG_INDEX = 10_000
PAGE_REFRESH_SECONDS = 15
SUBMISSION_KINDS = ("job", "clone", "resubmit")
_REASON = re.compile(r"[a-z][a-z-]{0,31}")


class ServiceMetrics:
    """The service's own metrics, in a registry of their own (not the process-wide default, which
    holds what the hub's configuration file registers when a hub loads it)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.submissions = Counter(
            "aiinfn_jobs_submissions",
            "Submissions accepted, by kind (job, clone, resubmit) and outcome (created, or "
            "replayed: an idempotency key that had already made the job).",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.refusals = Counter(
            "aiinfn_jobs_refusals",
            "Submissions refused, by reason (the error's reason: policy, capacity, "
            "rate-limited, too-many-jobs, offload...).",
            ["reason"],
            registry=self.registry,
        )
        for kind in SUBMISSION_KINDS:  # each series exists from the start, at 0
            for outcome in ("created", "replayed"):
                self.submissions.labels(kind=kind, outcome=outcome)

    def refused(self, reason: str) -> None:
        self.refusals.labels(reason=reason if _REASON.fullmatch(reason) else "other").inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _Jobs(ClusterHandler):
    """The job service's handlers: authenticated, rate-limited, 503 when the cluster is away."""

    @property
    def jobs(self) -> JobService:
        return self.settings["jobs"]

    @contextlib.contextmanager
    def submission(self) -> Iterator[None]:
        """Count a submission's refusal (any error that is not a bug) by its reason."""
        try:
            yield
        except Exception as error:
            user_error = self.as_user_error(error)
            if user_error is not None:
                self.settings["metrics"].refused(user_error.reason)
            raise

    def created(self, summary: dict, created: bool, kind: str) -> None:
        """201 with a Location for a new job, 200 for the one an idempotency key already made."""
        outcome = "created" if created else "replayed"
        self.settings["metrics"].submissions.labels(kind=kind, outcome=outcome).inc()
        if created:
            self.set_header(
                "Location", f"{self.settings['service_prefix']}api/jobs/{summary['id']}"
            )
        self.write_json(summary, 201 if created else 200)

    def int_argument(self, name: str, low: int, high: int) -> int | None:
        raw = self.get_query_argument(name, None)
        if raw is None:
            return None
        if not raw.isdigit() or not low <= int(raw) <= high:
            raise UserError(f"query parameter {name} must be a whole number from {low} to {high}")
        return int(raw)


class ApiRootHandler(_Jobs):
    async def get(self) -> None:
        self.write_api_root("aiinfn-jobs", self.user())


class JobsHandler(_Jobs):
    async def get(self) -> None:
        everyone = self.get_query_argument("all", "0")
        if everyone not in ("0", "1"):
            raise UserError("query parameter all must be 0 or 1")
        self.write_json({"jobs": await self.jobs.list(self.user(), everyone == "1")})

    async def post(self) -> None:
        with self.submission():
            caller = self.user()
            result = await self.jobs.submit(caller, parse(JobRequest, self.request.body))
        self.created(*result, "job")


class ClonesHandler(_Jobs):
    async def post(self) -> None:
        with self.submission():
            caller = self.user()
            result = await self.jobs.submit(caller, parse(CloneRequest, self.request.body))
        self.created(*result, "clone")


class JobHandler(_Jobs):
    async def get(self, job_id: str) -> None:
        self.write_json(await self.jobs.status(self.user(), job_id))

    async def delete(self, job_id: str) -> None:
        self.write_json(await self.jobs.cancel(self.user(), job_id))


class LogsHandler(_Jobs):
    async def get(self, job_id: str) -> None:
        caller = self.user()
        index = self.int_argument("index", 0, MAX_LOG_INDEX)
        tail = self.int_argument("tail", 1, 5000) or 200
        self.write_json(await self.jobs.logs(caller, job_id, index, tail))


class ResubmitHandler(_Jobs):
    async def post(self, job_id: str) -> None:
        with self.submission():
            caller = self.user()
            key = parse(ResubmitRequest, self.request.body).idempotency_key
            result = await self.jobs.resubmit(caller, job_id, key)
        self.created(*result, "resubmit")


class PageHandler(_Jobs):
    """The jobs page: the caller's jobs with their state and a cancel button (OAuth login), in
    the hub's look; errors are pages too."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = self.as_user_error(kwargs.get("exc_info", (None, None, None))[1])
        if error is not None:
            status_code, message = error.status, error.message
        else:
            message = "something went wrong; the service log has the details"
        pages.finish_error_page(self, status_code, message, title="Jobs")

    @web.authenticated
    async def get(self) -> None:
        jobs = await self.jobs.list(self.user())
        pages.finish_page(
            self,
            "jobs.html",
            title="Jobs",
            jobs=jobs,
            final=FINAL_STATES,
            error=None,
            refresh_seconds=PAGE_REFRESH_SECONDS,
            api=self.settings["service_prefix"] + "api/",
        )


class CancelFormHandler(_Jobs):
    """The page's cancel button (a form POST, so the hub's XSRF check applies to the cookie)."""

    async def post(self, job_id: str) -> None:
        await self.jobs.cancel(self.user(), job_id)
        self.redirect(self.settings["service_prefix"], status=303)


def routes() -> list[tuple]:
    job = r"([^/]+)"
    return [
        (r"api/?", ApiRootHandler),
        (r"api/openapi\.json", OpenApiHandler),
        (r"api/jobs/?", JobsHandler),
        (r"api/clones/?", ClonesHandler),
        (rf"api/jobs/{job}/?", JobHandler),
        (rf"api/jobs/{job}/logs/?", LogsHandler),
        (rf"api/jobs/{job}/resubmit/?", ResubmitHandler),
        (r"?", PageHandler),
        (rf"jobs/{job}/cancel", CancelFormHandler),
        (r"metrics", MetricsHandler),
        (r"health", HealthHandler),
    ]
