"""`snakemake --executor aiinfn`: each Snakemake job a job of the platform's job service.

Run from a notebook terminal: the notebook's hub token ($JUPYTERHUB_API_TOKEN) and the service's
address (as `aiinfn jobs` finds it) are all it needs; no Kubernetes credentials. Each job runs
Snakemake's own job command in the workflow's folder, which its job mounts at the same path as
the notebook does (home, projects or JuiceFS). The mapping from rules to requests is pure
(`mapping.py`); this module is the thin glue Snakemake's executor interface asks for.
"""

from __future__ import annotations

import asyncio
import os
import urllib.parse
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from snakemake_interface_executor_plugins.executors.real import RealExecutor
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor
from snakemake_interface_executor_plugins.jobs import JobExecutorInterface
from snakemake_interface_executor_plugins.settings import CommonSettings, ExecutorSettingsBase
from snakemake_interface_executor_plugins.utils import format_cli_arg

from aiinfn_hub.cli.client import TOKEN_ENV, Client, CliError, service_url

from . import mapping

LOG_LINES = 30


@dataclass
class ExecutorSettings(ExecutorSettingsBase):
    url: str | None = field(
        default=None,
        metadata={
            "type": str,
            "help": "The job service's URL (default: as `aiinfn jobs` finds it).",
        },
    )
    working_dir: str | None = field(
        default=None,
        metadata={
            "type": str,
            "help": "The workflow's folder as its jobs see it (default: the current folder, "
            "which jobs mount at the same path as the notebook).",
        },
    )
    environment: str | None = field(
        default=None,
        metadata={
            "type": str,
            "help": "Catalog environment for rules that name none (default: the first that fits).",
        },
    )
    project: str | None = field(
        default=None,
        metadata={"type": str, "help": "Project for rules that name none (its queue)."},
    )
    priority: str | None = field(
        default=None, metadata={"type": str, "help": "Priority for rules that name none."}
    )
    log_lines: int = field(
        default=LOG_LINES,
        metadata={"help": "Lines of a failed job's log to show.", "type": int},
    )


common_settings = CommonSettings(
    non_local_exec=True,
    implies_no_shared_fs=False,
    job_deploy_sources=False,
    pass_default_storage_provider_args=True,
    pass_default_resources_args=True,
    pass_envvar_declarations_to_cmd=True,
    auto_deploy_default_storage_provider=False,
    init_seconds_before_status_checks=1,
    pass_group_args=True,
    spawned_jobs_assume_shared_fs=True,
)


def _client(settings: ExecutorSettings | None) -> Client:
    token = os.environ.get(TOKEN_ENV)
    if not token:
        raise WorkflowError(f"no hub token: ${TOKEN_ENV} is set in notebook terminals")
    try:
        url = settings.url if settings and settings.url else service_url(os.environ)
    except CliError as error:
        raise WorkflowError(str(error)) from None
    return Client(url.rstrip("/") + "/", token)


class Executor(RemoteExecutor):
    def __post_init__(self) -> None:
        settings = self.workflow.executor_settings
        self.settings = settings or ExecutorSettings()
        self.client = _client(self.settings)
        self.run = uuid.uuid4().hex[:12]
        self.unfinished: dict[str, SubmittedJobInfo] = {}  # also those a poll holds
        self.working_dir = self.settings.working_dir or os.getcwd()
        self.user = os.environ.get("USER") or os.environ.get("NB_USER") or "jovyan"
        self.defaults = mapping.Defaults(
            self.settings.environment, self.settings.project, self.settings.priority
        )
        self._check_all()

    def _check_all(self) -> None:
        """Every job the workflow will run, checked before the first is submitted."""
        # Snakemake's DAG, beyond the executor interface: without it, each job is checked when
        # it is submitted.
        needrun = getattr(getattr(self.workflow, "dag", None), "needrun_jobs", None)
        jobs = [j for j in needrun() if not j.is_local] if needrun is not None else []
        problems = sorted({str(e) for e in (self._problem(j) for j in jobs) if e})
        if problems:
            raise WorkflowError("nothing was submitted:\n" + "\n".join(problems))

    def _problem(self, job: JobExecutorInterface) -> str | None:
        try:
            mapping.request(
                self._step(job, "#!/bin/sh\n"), self.defaults, self.working_dir, self.run
            )
        except mapping.RuleError as error:
            return str(error)
        return None

    def _step(self, job: JobExecutorInterface, script: str) -> mapping.Step:
        rule = job.groupid if job.is_group() else job.rule.name
        paths = tuple(str(p) for p in (*job.input, *job.output))
        return mapping.Step(
            rule, job.jobid, job.attempt, job.threads, dict(job.resources), script, paths
        )

    # -- the job command: paths as the job sees them --------------------------------------------

    def get_python_executable(self) -> str:
        return "python"  # the job's environment's own, which has Snakemake

    def get_snakefile(self) -> str:
        return os.path.relpath(self.workflow.main_snakefile)

    def get_job_args(self, job: JobExecutorInterface) -> str:
        waits = [os.path.relpath(self.tmpdir), *job.get_wait_for_files()]
        shown = [os.path.relpath(p) if os.path.isabs(p) else p for p in waits]
        return f"{RealExecutor.get_job_args(self, job)} {format_cli_arg('--wait-for-files', shown)}"

    # -- submitting, watching, cancelling --------------------------------------------------------

    def run_job(self, job: JobExecutorInterface) -> None:
        script = "#!/bin/sh\nset -e\n" + self.format_job_exec(job) + "\n"
        step = self._step(job, script)
        try:
            body = mapping.request(step, self.defaults, self.working_dir, self.run, self.user)
            summary = self.client.call("POST", "api/jobs", body, retry=True)
        except mapping.RuleError as error:
            raise WorkflowError(str(error)) from None
        except CliError as error:
            raise WorkflowError(f"rule {step.rule}: the job service refused it: {error}") from None
        job_info = SubmittedJobInfo(job, external_jobid=summary["id"])
        self.unfinished[summary["id"]] = job_info
        self.report_job_submission(job_info)

    async def check_active_jobs(
        self, active_jobs: list[SubmittedJobInfo]
    ) -> AsyncGenerator[SubmittedJobInfo, None]:
        if not active_jobs:
            return
        async with self.status_rate_limiter:
            try:
                listed = await asyncio.to_thread(self.client.call, "GET", "api/jobs")
            except CliError as error:
                self.logger.warning(f"aiinfn: cannot list jobs, trying again: {error}")
                listed = None
        if listed is None:
            for job_info in active_jobs:
                yield job_info
            return
        by_id = {j["id"]: j for j in listed.get("jobs") or ()}
        for job_info in active_jobs:
            summary = by_id.get(job_info.external_jobid)
            state = mapping.outcome(summary)
            if state != "running":
                self.unfinished.pop(job_info.external_jobid or "", None)
            if state == "succeeded":
                self.report_job_success(job_info)
            elif state == "running":
                yield job_info
            else:
                logs = await self._logs(job_info) if summary is not None else None
                if summary is not None and summary.get("state") not in mapping.FINISHED:
                    await asyncio.to_thread(self._delete, [job_info])
                message = mapping.failure_message(summary, logs)
                self.report_job_error(job_info, msg=message)

    async def _logs(self, job_info: SubmittedJobInfo) -> dict[str, Any] | None:
        job = urllib.parse.quote(job_info.external_jobid or "", safe="")
        path = f"api/jobs/{job}/logs?tail={self.settings.log_lines}"
        try:
            return await asyncio.to_thread(self.client.call, "GET", path)
        except CliError as error:
            self.logger.warning(f"aiinfn: no log for {job_info.external_jobid}: {error}")
            return None

    def cancel_jobs(self, active_jobs: list[SubmittedJobInfo]) -> None:
        """Delete every job of this run not known to be finished (a poll may hold some)."""
        self._delete([*active_jobs, *self.unfinished.values()])

    def _delete(self, job_infos: list[SubmittedJobInfo]) -> None:
        for external_id in dict.fromkeys(j.external_jobid for j in job_infos):
            job = urllib.parse.quote(external_id or "", safe="")
            try:
                self.client.call("DELETE", f"api/jobs/{job}", retry=True)
            except CliError as error:
                self.logger.error(f"aiinfn: could not cancel {external_id}: {error}")
