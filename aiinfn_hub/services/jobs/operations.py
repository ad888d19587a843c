"""What the job service does: submit (batch, Bunshin clones), list, status, logs, cancel, resubmit.

Idempotency and restart safety come from the cluster, not from memory: a Job's name is a digest
of (owner, idempotency key), so a repeated or concurrent submission of one key meets the first
Job (409 AlreadyExists) and gets it back; the key and a digest of the request are recorded on
the Job and checked, so a reused key with a different request is refused. A sandbox ConfigMap
is written before its Job and adopted by it after; one left by an interrupted submission is
reused by the retry or removed after a grace period.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio.client.rest import ApiException

from ... import labels, volumes
from ...accounting.quota_gate import QuotaGate
from ...catalog import Catalog
from ...errors import UserError
from ...identity import IdentityStore
from ...policy import Rules, UserPolicy, for_user
from ...storage_config import StorageSettings
from ..base import HubUser
from . import capacity
from . import request as requests
from .manifests import (
    SANDBOX_VOLUME,
    BuildSettings,
    JobMeta,
    PodParts,
    make_bunshin_job,
    make_job,
    make_sandbox,
    notebook_facts,
)
from .plan import JobPlan, JobRules, resolve
from .status import FINAL_STATES, owner_uid, positions, state, summarize
from .store import JobStore, api_message

log = logging.getLogger(__name__)

NAME_PREFIX = "job-"
JOB_ID = re.compile(rf"{NAME_PREFIX}[0-9a-f]{{20}}")
MAX_LOG_PODS = 10
MAX_LOG_LINES = 5000
MAX_LOG_BYTES = 256 * 1024
UNFINISHED_RECOUNT_SECONDS = 10.0
MISSING_QUEUE_RECHECK_SECONDS = 5.0
MAX_COUNTED_OWNERS = 10_000


class NotFound(UserError):
    """Unknown job, or one the caller may not see: the same answer, so ids reveal nothing."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job {job_id[:80]!r}", reason="not-found", status=404)


@dataclass(frozen=True)
class Platform:
    """Catalog and policies, exactly as the spawner reads them from the hub configuration."""

    catalog: Catalog
    default_rules: Rules
    group_rules: Mapping[str, Rules]

    def policy(self, caller: HubUser) -> UserPolicy:
        return for_user(self.default_rules, self.group_rules, caller.groups)

    def projects(self, caller: HubUser) -> list[str]:
        return [p.key for p in self.catalog.projects_of(caller.groups)]


def job_name(owner: str, key: str) -> str:
    """The Job's name for (owner, idempotency key): the same pair always gives the same name."""
    return NAME_PREFIX + hashlib.sha256(f"{owner}\n{key}".encode()).hexdigest()[:20]


def stored_request(request: requests.AnyRequest) -> str:
    """The request as recorded on its Job for resubmission: the sandbox lives in its ConfigMap."""
    document = request.model_dump(
        mode="json", exclude={"files", "script", "idempotency_key"}, exclude_defaults=True
    )
    return json.dumps({**document, "kind": request.kind}, separators=(",", ":"))


def _age_seconds(obj: Mapping[str, Any], now: datetime) -> float:
    created = datetime.fromisoformat(obj["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    return (now - created).total_seconds()


class JobService:
    """The operations, for one caller at a time; identity always comes from the hub."""

    def __init__(
        self,
        store: JobStore,
        platform: Platform,
        rules: JobRules,
        build: BuildSettings,
        storage: StorageSettings,
        identities: IdentityStore,
        quotas: QuotaGate | None = None,
    ) -> None:
        self.store = store
        self.quotas = quotas  # GPU-hour quotas (docs/accounting.md); None: none configured
        self.platform = platform
        self.rules = rules
        self.build = build
        self.storage = storage
        self.identities = identities
        self._room: tuple[float, capacity.Capacity | None] | None = None
        self._counts: dict[str, tuple[float, int]] = {}
        self._room_lock = asyncio.Lock()

    # -- submit --------------------------------------------------------------------------------

    async def submit(self, caller: HubUser, request: requests.AnyRequest) -> tuple[dict, bool]:
        """(summary, created): a new Job, or the one this idempotency key already made."""
        policy = self.platform.policy(caller)
        pod = None
        if isinstance(request, requests.CloneRequest):
            pod = await self.store.notebook_pod(caller.name, request.server)
            if pod is None:
                which = f"server {request.server!r}" if request.server else "default server"
                raise UserError(
                    f"your {which} is not running; start it to clone it",
                    reason="no-notebook",
                    status=409,
                )
            facts = notebook_facts(pod, self.platform.catalog.accelerators)
            plan = resolve(request, caller, self.platform.catalog, policy, self.rules, facts)
        else:
            plan = resolve(request, caller, self.platform.catalog, policy, self.rules)
        key = request.idempotency_key or secrets.token_hex(16)
        meta = JobMeta(
            name=job_name(caller.name, key),
            idempotency_key=key,
            digest=request.digest(),
            request=stored_request(request),
        )
        await self._check_quota(caller, meta, plan)
        if pod is not None:
            manifest = make_bunshin_job(meta, plan, pod, self.build)
        else:
            manifest = make_job(meta, plan, await self._parts(caller, plan), self.build)
        await self._check_room(caller, meta, plan, manifest)
        if plan.sandbox:
            await self._write_sandbox(make_sandbox(meta, plan), caller, meta)
        try:
            job = await self.store.create_job(manifest)
        except ApiException as error:
            if error.status == 409:
                return await self._existing(caller, meta, plan), False
            if plan.sandbox:
                await self.store.delete_sandbox(meta.name)
            if error.status in (400, 403, 422):
                raise UserError(
                    f"the cluster refused the job: {api_message(error)[:500]}",
                    reason="refused",
                    log_detail=f"creating job {meta.name} for {caller.name}: {api_message(error)}",
                    status=422,
                ) from None
            raise
        if plan.sandbox:
            await self.store.adopt_sandbox(job)
        self._count(caller.name, +1)
        log.info(
            "Created %s job %s for %s in project %s",
            plan.kind,
            meta.name,
            caller.name,
            plan.project,
        )
        return summarize(job, None, self.rules.priorities), True

    async def _check_quota(self, caller: HubUser, meta: JobMeta, plan: JobPlan) -> None:
        """Refuse a job on an accelerator whose GPU-hour quota, the caller's or the project's,
        has no hours left (403 with the figures), before anything is made. A repeated
        submission of a job that exists is let through to get it back."""
        if self.quotas is None or plan.accelerator.kind == "cpu":
            return
        try:
            await self.quotas.check(caller.name, plan.accelerator.key, plan.project)
        except UserError:
            if await self.store.get_job(meta.name) is None:
                raise

    async def _check_room(
        self, caller: HubUser, meta: JobMeta, plan: JobPlan, manifest: Mapping[str, Any]
    ) -> None:
        """Refuse a job beyond the caller's number of unfinished jobs, or one the cluster could
        never run. A repeated submission of a job that exists is let through to get it back."""
        try:
            unfinished, room = await asyncio.gather(self._unfinished(caller.name), self._capacity())
            most = self.rules.max_unfinished_jobs
            if unfinished >= most:
                raise UserError(
                    f"you have {unfinished} jobs that have not finished, the most one "
                    f"user may have ({most}); wait for some to finish or cancel some",
                    reason="too-many-jobs",
                    status=429,
                )
            if room is not None and plan.queue not in room.queues:
                room = await self._capacity(queue_missing=True)  # made since it was read?
            if room is not None:
                kind = plan.accelerator
                names = {kind.resource: kind.display_name} if kind.resource else {}
                capacity.check(
                    room,
                    plan.queue,
                    manifest["spec"]["template"]["spec"],
                    manifest["spec"]["parallelism"],
                    names,
                )
        except UserError:
            if await self.store.get_job(meta.name) is None:
                raise

    async def _unfinished(self, owner: str) -> int:
        """How many of the owner's jobs have not finished: counted from the cluster at most every
        UNFINISHED_RECOUNT_SECONDS (a listing of all their jobs per submission would cost more
        than the submission), plus the jobs this service made since, less those it cancelled.
        Jobs that finish meanwhile count until the next recount, so the limit errs on the strict
        side; submissions in flight at once may pass it by their number."""
        now = time.monotonic()
        counted = self._counts.get(owner)
        if counted is None or now - counted[0] >= UNFINISHED_RECOUNT_SECONDS:
            jobs = await self.store.list_jobs(owner)
            if len(self._counts) >= MAX_COUNTED_OWNERS:
                self._counts = {
                    o: c for o, c in self._counts.items() if now - c[0] < UNFINISHED_RECOUNT_SECONDS
                }
            unfinished = sum(1 for j in jobs if state(j, None) not in FINAL_STATES)
            counted = self._counts[owner] = (now, unfinished)
        return counted[1]

    def _count(self, owner: str, change: int) -> None:
        if owner in self._counts:
            at, count = self._counts[owner]
            self._counts[owner] = (at, max(0, count + change))

    async def _capacity(self, queue_missing: bool = False) -> capacity.Capacity | None:
        """Kueue's quotas and the nodes, read again after capacity_refresh_seconds (or after
        MISSING_QUEUE_RECHECK_SECONDS when a job's queue was not there); None (and no check)
        where the service may not read them or Kueue is not installed."""

        def fresh() -> bool:
            age = time.monotonic() - self._room[0] if self._room is not None else None
            most = self.rules.capacity_refresh_seconds
            return age is not None and age < (
                MISSING_QUEUE_RECHECK_SECONDS if queue_missing else most
            )

        if fresh():
            return self._room[1]
        async with self._room_lock:
            if fresh():
                return self._room[1]
            try:
                objects = await asyncio.gather(
                    self.store.local_queues(),
                    self.store.cluster_objects("clusterqueues"),
                    self.store.cluster_objects("resourceflavors"),
                    self.store.nodes(),
                )
                room = capacity.capacity(*objects)
            except ApiException as error:
                if error.status not in (403, 404):
                    raise
                log.warning(
                    "Cannot read Kueue's queues and flavors or the nodes (%s %s): jobs are "
                    "not checked against what the cluster can hold (see "
                    "helm-values/jobs-service-rbac.yaml)",
                    error.status,
                    error.reason,
                )
                room = None
            self._room = (time.monotonic(), room)
        return room

    async def _parts(self, caller: HubUser, plan: JobPlan) -> PodParts:
        """Image, volumes and numeric identity of a batch job: the user's own, as in notebooks."""
        projects = self.platform.projects(caller)
        identity = await self.identities.identity(caller.name, projects)
        job_volumes, mounts = volumes.for_job(
            self.storage, caller.name, projects, plan.volume_kinds
        )
        user = volumes.StorageUser(caller.name, identity, tuple(projects))
        init = volumes.init_containers(self.storage, user, plan.volume_kinds, plan.image)
        return PodParts(
            image=plan.image,
            volumes=tuple(job_volumes),
            mounts=tuple(mounts),
            security=volumes.pod_security_context(identity),
            init_containers=tuple(init),
        )

    @staticmethod
    def _same_key(obj: Mapping[str, Any], caller: HubUser, meta: JobMeta) -> bool:
        annotations = obj["metadata"].get("annotations") or {}
        return (
            annotations.get(labels.OWNER_NAME) == caller.name
            and annotations.get(labels.IDEMPOTENCY_KEY) == meta.idempotency_key
        )

    async def _write_sandbox(self, configmap: dict, caller: HubUser, meta: JobMeta) -> None:
        """Create the sandbox; reuse, or refresh, one an interrupted submission of this key left."""
        try:
            await self.store.create_sandbox(configmap)
            return
        except ApiException as error:
            if error.status != 409:
                raise
        existing = await self.store.get_sandbox(meta.name)
        if existing is None or not self._same_key(existing, caller, meta):
            raise UserError(
                "this idempotency key cannot be used now; try another",
                reason="conflict",
                status=409,
                log_detail=f"sandbox {meta.name} belongs to another submission",
            )
        metadata = existing["metadata"]
        if (metadata.get("annotations") or {}).get(
            labels.REQUEST_DIGEST
        ) != meta.digest and not metadata.get("ownerReferences"):
            # Left by an interrupted submission of a different request under this key: no Job
            # uses it, so it takes this request's files (a Job of the old one would own it).
            await self.store.replace_sandbox(
                {
                    **configmap,
                    "metadata": {
                        **configmap["metadata"],
                        "resourceVersion": metadata["resourceVersion"],
                    },
                }
            )

    async def _existing(self, caller: HubUser, meta: JobMeta, plan: JobPlan) -> dict:
        job = await self.store.get_job(meta.name)
        if job is None or not self._same_key(job, caller, meta):
            raise UserError(
                "this idempotency key cannot be used now; try another",
                reason="conflict",
                status=409,
                log_detail=f"job {meta.name} exists but is not {caller.name}'s submission",
            )
        if (job["metadata"].get("annotations") or {}).get(labels.REQUEST_DIGEST) != meta.digest:
            raise UserError(
                f"idempotency key {meta.idempotency_key!r} was already used for a different job "
                f"({meta.name})",
                reason="conflict",
                status=409,
            )
        if plan.sandbox:
            sandbox = await self.store.get_sandbox(meta.name)
            if sandbox is not None and not sandbox["metadata"].get("ownerReferences"):
                await self.store.adopt_sandbox(job)
        log.info("Idempotent resubmission of job %s by %s", meta.name, caller.name)
        return summarize(job, None, self.rules.priorities)

    # -- reading -------------------------------------------------------------------------------

    async def _visible(self, caller: HubUser, job_id: str) -> dict:
        """The job if the caller owns it (or is an admin); NotFound otherwise, alike."""
        if not JOB_ID.fullmatch(job_id):
            raise NotFound(job_id)
        job = await self.store.get_job(job_id)
        if (
            job is None
            or (job["metadata"].get("labels") or {}).get(labels.MANAGED_BY)
            != labels.MANAGED_BY_VALUE
        ):
            raise NotFound(job_id)
        if (
            not caller.admin
            and (job["metadata"].get("annotations") or {}).get(labels.OWNER_NAME) != caller.name
        ):
            raise NotFound(job_id)
        return job

    async def list(self, caller: HubUser, everyone: bool = False) -> list[dict]:
        """The caller's jobs, newest first; admins may ask for everyone's."""
        jobs, workloads = await asyncio.gather(
            self.store.list_jobs(None if everyone and caller.admin else caller.name),
            self.store.workloads(),
        )
        by_job = {owner_uid(w): w for w in workloads}
        places = positions(workloads)
        summaries = []
        for job in jobs:
            workload = by_job.get(job["metadata"]["uid"])
            place = places.get(workload["metadata"]["uid"]) if workload else None
            summaries.append(summarize(job, workload, self.rules.priorities, place))
        return sorted(summaries, key=lambda s: (s["created"] or "", s["id"]), reverse=True)

    async def status(self, caller: HubUser, job_id: str) -> dict:
        job = await self._visible(caller, job_id)
        uid = job["metadata"]["uid"]
        workloads, pods = await asyncio.gather(self.store.workloads(), self.store.pods(uid))
        workload = next((w for w in workloads if owner_uid(w) == uid), None)
        place = positions(workloads).get(workload["metadata"]["uid"]) if workload else None
        return summarize(job, workload, self.rules.priorities, place, pods)

    async def logs(self, caller: HubUser, job_id: str, index: int | None, tail_lines: int) -> dict:
        """The last lines of each pod's log (of one completion index if given)."""
        job = await self._visible(caller, job_id)
        summary = summarize(
            job, None, self.rules.priorities, pods=await self.store.pods(job["metadata"]["uid"])
        )
        pods = [p for p in summary["pods"] if index is None or p["index"] == index][-MAX_LOG_PODS:]
        tail_lines = max(1, min(tail_lines, MAX_LOG_LINES))

        async def one(pod: dict) -> dict:
            entry = {"pod": pod["name"], "index": pod["index"], "phase": pod["phase"]}
            try:
                entry["log"] = await self.store.log(pod["name"], tail_lines, MAX_LOG_BYTES)
            except ApiException as error:
                log.info("No log for pod %s: %s %s", pod["name"], error.status, error.reason)
                entry["log"] = ""
                entry["error"] = "the node did not return this pod's log (yet)"
            return entry

        return {"id": job_id, "pods": list(await asyncio.gather(*(one(p) for p in pods)))}

    # -- changing ------------------------------------------------------------------------------

    async def cancel(self, caller: HubUser, job_id: str) -> dict:
        """Delete the job with its pods, Workload and sandbox."""
        job = await self._visible(caller, job_id)
        if not await self.store.delete_job(job_id):
            raise NotFound(job_id)
        owner = (job["metadata"].get("annotations") or {}).get(labels.OWNER_NAME)
        if state(job, None) not in FINAL_STATES:
            self._count(owner, -1)
        log.info("Cancelled job %s of %s (by %s)", job_id, owner, caller.name)
        return {**summarize(job, None, self.rules.priorities), "state": "cancelled"}

    async def resubmit(self, caller: HubUser, job_id: str, key: str | None) -> tuple[dict, bool]:
        """Submit one of the caller's own jobs again, as it was asked for (checked anew)."""
        job = await self._visible(caller, job_id)
        annotations = job["metadata"].get("annotations") or {}
        if annotations.get(labels.OWNER_NAME) != caller.name:
            raise UserError("only the owner can resubmit a job", reason="not-owner", status=403)
        document = requests.stored_document(annotations.get(labels.REQUEST, "{}"))
        volumes_of = job["spec"]["template"]["spec"].get("volumes") or ()
        if any(v["name"] == SANDBOX_VOLUME for v in volumes_of):
            sandbox = await self.store.get_sandbox(job_id)
            if sandbox is None:
                raise UserError(
                    "this job's sandbox files are gone; submit it anew", reason="gone", status=409
                )
            files = dict(sandbox.get("data") or {})
            script = files.pop(requests.SCRIPT_KEY, None)
            document.update({"files": files, **({"script": script} if script is not None else {})})
        if key is not None:
            document["idempotency_key"] = key
        return await self.submit(caller, requests.from_document(document))

    async def collect_orphans(self, grace_seconds: float) -> int:
        """Delete sandboxes whose Job was never created (older than the grace period)."""
        now = datetime.now(UTC)
        removed = 0
        for configmap in await self.store.orphan_sandboxes():
            if _age_seconds(configmap, now) > grace_seconds:
                await self.store.delete_sandbox(configmap["metadata"]["name"])
                removed += 1
        if removed:
            log.info("Removed %d sandbox(es) of interrupted submissions", removed)
        return removed
