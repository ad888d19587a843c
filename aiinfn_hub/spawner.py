"""AiInfnSpawner: KubeSpawner with the accelerator-aware spawn page. Thin glue only.

The logic lives in pure modules: catalog (what exists), policy (who may take what), profiles
(form and validation), placement (where the pod goes), reservations (reserve or fail fast),
inventory (what is free now), volumes/identity/tokens (storage, uid/gids, the access-token Secret).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
from kubernetes_asyncio.client.rest import ApiException
from kubespawner import KubeSpawner
from kubespawner.clients import shared_client
from traitlets import Float, Instance, Integer, default

from . import (
    form,
    hubstate,
    labels,
    names,
    placement,
    podfailure,
    profiles,
    reservations,
    spawn_progress,
    tokens,
    volumes,
)
from .errors import HIDE_PREFILLED_TRACEBACK, OnlyPrefilled, UserError, to_http_error
from .identity import IdentityStore
from .inventory_watch import InventoryWatcher
from .platform_config import AiInfnPlatform
from .policy import UserPolicy, for_user
from .profiles import Availability
from .storage_config import AiInfnStorage

INVENTORY_SYNC_WAIT = 10.0
WATCH_SECONDS = 0.5
# A failed container's log: what is read (the tail of crash_log_lines lines) and what is shown.
CRASH_LOG_READ_BYTES = 64 * 1024
CRASH_LOG_BYTES = 4 * 1024


class AiInfnSpawner(KubeSpawner):
    """A KubeSpawner whose users pick an accelerator, an environment and a size from the catalog,
    see what is free right now, and land exactly on the hardware they picked."""

    platform_settings = Instance(
        AiInfnPlatform,
        help="""The platform settings (catalog, policies, placement): `c.AiInfnPlatform.*`, shared
        with the job service and the admin checks. Not configured here.""",
    )
    fail_fast_seconds = Float(
        10.0,
        config=True,
        help="Give up a spawn whose pod the scheduler still cannot place after this many seconds.",
    )
    crash_restarts = Integer(
        3,
        min=0,
        config=True,
        help="""Give up a spawn once a container of its pod (the notebook or a set-up init
        container) has failed again after this many restarts (0: at its first failure), instead
        of waiting start_timeout through the kubelet's crash-loop back-off (10 s, 20 s, 40 s...).
        The user sees the container's exit code and its last log lines (crash_log_lines).""",
    )
    crash_log_lines = Integer(
        20,
        min=0,
        config=True,
        help="""Last log lines of a failed container shown with the spawn error (at most 4 KiB,
        read through the pods/log API, so the hub needs `get` on `pods/log`). The hub's tokens for
        the user, its auth_state and anything that looks like a credential are masked.""",
    )

    _shared: hubstate.Platform | None = None
    _identity_stores: dict[str, IdentityStore] = {}
    # Accelerator units this server holds; kept in the hub's state so limits survive restarts.
    accelerator_units = 0
    # Whether the running pod mounts the access-token Secret (kept in state), and the digest of
    # the token last written (memory only: after a hub restart the first poll writes it again).
    token_mounted = False
    _token_fingerprint: str | None = None
    _configured: dict[str, Any] | None = None
    # Options of a /hub/spawn link, valid for the user: the next form render shows them.
    _link_options: dict[str, Any] | None = None
    # This spawn's own progress messages (spawn_progress), in order; progress() shows them.
    _progress: list[spawn_progress.Event] = []

    # -- restricted-safe pod defaults ------------------------------------------------------

    @default("uid")
    def _default_uid(self) -> int:
        return 1000

    @default("gid")
    def _default_gid(self) -> int:
        return 100

    @default("fs_gid")
    def _default_fs_gid(self) -> int:
        return 100

    @default("automount_service_account_token")
    def _default_automount_service_account_token(self) -> bool:
        return False

    @default("container_security_context")
    def _default_container_security_context(self) -> dict:
        return {"capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True}

    @default("pod_security_context")
    def _default_pod_security_context(self) -> dict:
        return {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}

    @default("delete_pvc")
    def _default_delete_pvc(self) -> bool:
        # Storage lives in shared claims (volumes.py), never in a per-user claim to delete.
        return False

    @default("extra_labels")
    def _default_extra_labels(self) -> dict:
        return {labels.MANAGED_BY: labels.MANAGED_BY_VALUE, labels.PART_OF: labels.PART_OF_VALUE}

    # -- shared state ----------------------------------------------------------------------

    @default("platform_settings")
    def _default_platform_settings(self) -> AiInfnPlatform:
        return AiInfnPlatform(parent=self)

    def _platform(self) -> hubstate.Platform:
        if AiInfnSpawner._shared is None:
            AiInfnSpawner._shared = hubstate.load(self.platform_settings)
        return AiInfnSpawner._shared

    async def _synced_inventory(self, wait: float) -> bool:
        """Start the process-wide watcher once; True when its first lists are in."""
        platform = self._platform()
        if platform.watcher is None:
            platform.watcher = InventoryWatcher(
                shared_client("CoreV1Api").api_client, platform.inventory
            )
            platform.watcher_start = asyncio.ensure_future(platform.watcher.start(wait=False))
        if not platform.watcher.synced.is_set():
            try:
                await asyncio.wait_for(asyncio.shield(platform.watcher.synced.wait()), wait)
            except TimeoutError:
                return False
        return True

    def _policy(self) -> UserPolicy:
        platform = self._platform()
        return for_user(
            platform.default_rules, platform.group_rules, [g.name for g in self.user.groups]
        )

    def _held_elsewhere(self) -> int:
        """Accelerator units the user's other active servers hold."""
        return sum(
            getattr(other, "accelerator_units", 0)
            for other in self.user.spawners.values()
            if other is not self and other.active
        )

    def _availability(self, policy: UserPolicy) -> dict[str, Availability]:
        platform = self._platform()
        snapshot = platform.inventory.snapshot(policy.groups)
        raw = {
            key: Availability(free=c.free_if_preempted, total=c.total, batch=c.batch)
            for key, c in snapshot.items()
        }
        return reservations.available(raw, platform.reservations)

    # -- the form ----------------------------------------------------------------------------

    @default("profile_list")
    def _default_profile_list(self):
        return self._build_profiles

    async def _build_profiles(
        self, spawner: AiInfnSpawner, prefill: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        platform = self._platform()
        policy = self._policy()
        synced = await self._synced_inventory(wait=1.0)
        availability = self._availability(policy) if synced else {}
        selected = prefill or self._saved_plan_options(policy)
        return profiles.build(
            platform.catalog, availability, policy, self._held_elsewhere(), selected
        )

    def _saved_plan_options(self, policy: UserPolicy) -> dict[str, Any]:
        """The last options if they are still allowed, else nothing (the defaults apply)."""
        try:
            plan = profiles.resolve(
                self._platform().catalog, policy, self.user_options or {}, self._held_elsewhere()
            )
        except UserError:
            return {}
        return plan.as_options()

    @default("options_form")
    def _default_options_form(self):
        return self._render_form

    async def _render_form(self, spawner: AiInfnSpawner) -> str:
        prefill, self._link_options = self._link_options, None
        notice = form.LINK_NOTICE if prefill is not None else ""
        return form.render(await self._build_profiles(spawner, prefill), notice)

    @default("options_from_form")
    def _default_options_from_form(self):
        return self._options_from_form

    def _options_from_form(self, formdata: dict[str, list[str]]) -> dict[str, Any]:
        try:
            return profiles.options_from_form(formdata)
        except UserError as error:
            raise to_http_error(error) from None

    def options_from_query(self, query_data: dict[str, list[str]]) -> dict[str, Any]:
        """Never return: JupyterHub starts a server on a GET of /hub/spawn?<options>, so a link on
        any site could start one for a logged-in user. Valid options only pre-fill the form (the
        next render); starting takes the form's POST with its _xsrf. Invalid ones are refused."""
        try:
            options = profiles.options_from_query(query_data)
            plan = profiles.resolve(
                self._platform().catalog, self._policy(), options, self._held_elsewhere()
            )
        except UserError as error:
            self.log.info(
                "Refusing the spawn link options of %s: %s", self._log_name, error.log_detail
            )
            raise to_http_error(error) from None
        self._link_options = plan.as_options() if options else None
        self.log.addFilter(HIDE_PREFILLED_TRACEBACK)  # once: a Logger keeps each filter once
        self.log.info("Spawn link of %s only pre-fills the form", self._log_name)
        raise OnlyPrefilled()

    # -- spawning ----------------------------------------------------------------------------

    @property
    def _server_id(self) -> str:
        return f"{self.user.name}/{self.name}"

    def _options_were_given(self) -> bool:
        """True when this spawn request carried options (form or REST body), False when JupyterHub
        reused the saved ones, which may no longer be allowed and then fall back to defaults."""
        request = getattr(self.handler, "request", None)
        return bool(request is not None and request.method == "POST" and request.body)

    async def load_user_options(self) -> None:
        """Validate, reserve and place (_load_user_options). A refusal creates no pod, and a named
        server that never ran is removed once the refusal is recorded (_remove_when_failed)."""
        try:
            await self._load_user_options()
        except Exception:
            self._remove_when_failed()
            raise

    def _remove_when_failed(self) -> None:
        """Have a named server that has never run removed when this spawn has failed: JupyterHub
        keeps the record of a server whose start failed, and it would count against
        named_server_limit_per_user until the user deleted it. "Never run": no state saved,
        which JupyterHub does when a server stops (a refused or failed start included)."""
        spawn = self._spawn_future
        if (
            not self.name
            or self.orm_spawner is None
            or self.orm_spawner.state is not None
            or spawn is None
        ):
            return

        def remove(future: asyncio.Future) -> None:
            # A done callback, so it runs before the handler that awaited the spawn resumes.
            user = self.user
            if future.cancelled() or user.spawners.get(self.name) is not self or self.active:
                return
            self.log.info("Removing %s: its first start was refused", self._log_name)
            self.db.delete(self.orm_spawner)
            user.spawners.pop(self.name, None)
            self.db.commit()

        spawn.add_done_callback(remove)

    async def _load_user_options(self) -> None:
        """Validate user_options (one path for the form and the REST API), reserve the units, and
        set the pod's image, resources, placement and storage. Refusals are 4xx/503, never a pod."""
        try:
            names.username(self.user.name)
        except names.InvalidName as error:
            self.log.warning("Refusing to spawn for an invalid username: %s", error.log_detail)
            raise to_http_error(error) from None
        platform = self._platform()
        policy = self._policy()
        held = self._held_elsewhere()
        try:
            try:
                plan = profiles.resolve(platform.catalog, policy, self.user_options, held)
            except UserError as error:
                if self._options_were_given():
                    raise
                self.log.info(
                    "Saved options of %s are no longer allowed (%s); using defaults",
                    self._log_name,
                    error.log_detail,
                )
                plan = profiles.resolve(platform.catalog, policy, {}, held)
            self._progress.append(spawn_progress.options_checked(plan))
            await self._reserve(plan, policy)
        except UserError as error:
            self.log.warning("Refusing to spawn %s: %s", self._log_name, error.log_detail)
            raise to_http_error(error) from None
        self.accelerator_units = plan.count if plan.accelerator.kind != "cpu" else 0
        settings = placement.PlacementSettings(
            priority_class=self.platform_settings.notebook_priority_class,
            reservation_taint_key=self.platform_settings.reservation_taint_key,
            accelerator_node_labels=tuple(self.platform_settings.accelerator_node_labels),
            cpu_on_accelerator_nodes=self.platform_settings.cpu_on_accelerator_nodes,
        )
        for name, value in placement.spawner_traits(plan, policy.groups, settings).items():
            if name == "extra_labels":
                value = {**self.extra_labels, **value}
            setattr(self, name, value)
        try:
            await self._apply_storage(plan, policy.groups)
        except UserError as error:
            self.log.warning("Refusing to spawn %s: %s", self._log_name, error.log_detail)
            raise to_http_error(error) from None

    # -- storage, identity, token -----------------------------------------------------------

    def _configured_value(self, name: str) -> Any:
        """A trait as configured, before any spawn replaced it (our values add to the admin's)."""
        if self._configured is None:
            self._configured = {
                "volumes": list(self._sorted_dict_values(self.volumes)),
                "volume_mounts": list(self._sorted_dict_values(self.volume_mounts)),
                "init_containers": list(self._sorted_dict_values(self.init_containers)),
                "pod_security_context": dict(self.pod_security_context),
                "environment": dict(self.environment),
            }
        return self._configured[name]

    def _api_client(self):
        return shared_client("CoreV1Api").api_client

    async def _apply_storage(self, plan: profiles.SpawnPlan, groups: list[str]) -> None:
        """Volumes for the user's current projects, their uid/gids and their access-token Secret."""
        settings = AiInfnStorage(parent=self).settings()
        username = names.username(self.user.name)
        projects = tuple(p.key for p in self._platform().catalog.projects_of(groups))
        curator = (settings.envs_curator_group,) if settings.envs_curator_group in groups else ()
        store = AiInfnSpawner._identity_stores.get(self.namespace)
        if store is None:
            store = AiInfnSpawner._identity_stores[self.namespace] = IdentityStore(
                self._api_client(), self.namespace, settings
            )
        identity = await store.identity(username, projects + curator)
        token = tokens.access_token(await self.user.get_auth_state())
        user = volumes.StorageUser(username, identity, projects, token=token is not None)
        storage = volumes.build(
            settings,
            user,
            plan.size.scratch or settings.default_scratch_size,
            plan.size.shm or settings.default_shm_size,
            self.image,
        )
        self.volumes = [*self._configured_value("volumes"), *storage.volumes]
        self.volume_mounts = [*self._configured_value("volume_mounts"), *storage.mounts]
        self.init_containers = [
            *self._configured_value("init_containers"),
            *storage.init_containers,
        ]
        self.pod_security_context = {
            **self._configured_value("pod_security_context"),
            **storage.security_context,
        }
        self.environment = {**self._configured_value("environment"), **storage.environment}
        self.uid, self.gid, self.fs_gid = identity.uid, identity.gid, identity.gid
        self.supplemental_gids = identity.supplemental_gids
        self._progress.append(spawn_progress.identity_assigned(identity.uid, identity.gid))
        self.token_mounted = token is not None
        if token is not None:
            await self._write_token(username, token)
            self._progress.append(spawn_progress.token_written())

    async def _write_token(self, username: str, token: str) -> None:
        try:
            await tokens.sync(self._api_client(), self.namespace, username, token)
        except tokens.TokenSyncError as error:
            raise UserError(
                "your access token could not be stored for the server; try again",
                reason="token",
                log_detail=str(error),
                status=503,
            ) from None
        self._token_fingerprint = tokens.fingerprint(token)

    async def _renew_token(self) -> None:
        """Rewrite the Secret if the hub holds a different access token now (after a refresh)."""
        try:
            token = tokens.access_token(await self.user.get_auth_state())
            if token is None or tokens.fingerprint(token) == self._token_fingerprint:
                return
            await self._write_token(names.username(self.user.name), token)
            self.log.info("Access-token Secret of %s renewed", self._log_name)
        except UserError as error:
            self.log.warning(
                "Could not renew the access-token Secret of %s: %s",
                self._log_name,
                error.log_detail,
            )
        except Exception:
            # The server keeps running with the previous token; the next poll tries again.
            self.log.exception(
                "Unexpected error renewing the access-token Secret of %s", self._log_name
            )

    async def _forget_token(self) -> None:
        """Delete the Secret once none of the user's servers is running or starting."""
        self._token_fingerprint = None
        if any(other.active for other in self.user.spawners.values() if other is not self):
            return
        try:
            username = names.username(self.user.name)
        except names.InvalidName:
            return  # such a user never got a Secret
        try:
            if await tokens.delete(self._api_client(), self.namespace, username):
                self.log.info("Access-token Secret of %s deleted", self.user.name)
        except tokens.TokenSyncError as error:
            self.log.warning(
                "Could not delete the access-token Secret of %s: %s", self.user.name, error
            )

    async def poll(self):
        status = await super().poll()
        if status is None and self.token_mounted:
            await self._renew_token()
        return status

    async def stop(self, now: bool = False) -> None:
        await super().stop(now=now)
        await self._forget_token()

    async def delete_forever(self) -> None:
        await super().delete_forever()
        await self._forget_token()

    async def _reserve(self, plan: profiles.SpawnPlan, policy: UserPolicy) -> None:
        if plan.accelerator.kind == "cpu":
            return
        platform = self._platform()
        if not await self._synced_inventory(wait=INVENTORY_SYNC_WAIT):
            raise UserError(
                "accelerator availability is not known yet; try again in a moment",
                reason="capacity",
                status=503,
            )
        async with platform.lock:
            availability = self._availability(policy)
            largest = platform.inventory.largest_free_block(
                plan.accelerator.key, policy.groups, preempt=True
            )
            allowed = {
                k for k in platform.catalog.accelerators if policy.rules.allows_accelerator(k)
            }
            reservations.check(plan, platform.catalog, availability, largest, allowed)
            platform.reservations.promise(self._server_id, plan.accelerator.key, plan.count)
        self._progress.append(spawn_progress.reserved(plan))

    async def start(self):
        """KubeSpawner's start, abandoned as soon as the pod cannot start (see _watch_start).
        KubeSpawner.start() only wraps its _start in the future its progress() follows."""
        self._progress = []
        start = super().start()
        watchdog = asyncio.ensure_future(self._watch_start())
        try:
            await asyncio.wait({start, watchdog}, return_when=asyncio.FIRST_COMPLETED)
            if watchdog.done() and not watchdog.cancelled() and watchdog.exception():
                start.cancel()
                await self._abandon(start)
                raise watchdog.exception()
            return await start
        finally:
            watchdog.cancel()
            start.cancel()  # when this start is cancelled itself (the server deleted meanwhile)
            if AiInfnSpawner._shared is not None:
                AiInfnSpawner._shared.reservations.release(self._server_id)

    async def _abandon(self, start: asyncio.Future) -> None:
        """Delete the pod of a start given up, and wait until it is gone, before the failure is
        raised. JupyterHub stops counting the spawn as pending the moment start() fails, while
        it deletes the pod; a REST call whose slow_spawn_timeout ended then was answered 201
        (ready) for a server that was failing. Until this returns the spawn is pending (202)."""
        await asyncio.wait({start})
        try:
            await self.stop(now=True)
        except Exception:
            # JupyterHub's own clean-up after the failure deletes the pod again.
            self.log.exception("Could not delete the pod of %s after giving up", self._log_name)

    async def _watch_start(self) -> None:
        """Raise once the pod cannot start: FailedScheduling has been its latest word for
        fail_fast_seconds (not counting while preempted pods make room for it), or a container
        has failed again after crash_restarts restarts. Tells progress() what it sees."""
        first_seen = None
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            crash = self._crash()
            if crash is not None:
                error = await self._crash_error(crash)
                self.log.warning("Giving up spawn of %s: %s", self._log_name, error.log_detail)
                raise to_http_error(error)
            events = self.events if self.event_reflector else []
            latest = events[-1] if events else None
            self._note_scheduling(latest)
            if latest is None or latest.get("reason") != "FailedScheduling" or self._nominated():
                first_seen = None
                continue
            first_seen = first_seen or time.monotonic()
            if time.monotonic() - first_seen >= self.fail_fast_seconds:
                error = UserError(
                    f"no node can host this server now: {latest.get('message', '')}",
                    reason="capacity",
                    status=503,
                )
                self.log.warning("Giving up spawn of %s: %s", self._log_name, error.log_detail)
                raise to_http_error(error)

    def _pod(self) -> dict | None:
        reflector = self.pod_reflector
        return reflector.pods.get(f"{self.namespace}/{self.pod_name}") if reflector else None

    def _nominated(self) -> bool:
        """Whether the scheduler has preempted pods for this one and waits for them to stop
        (their grace period, 30 s by default, may well exceed fail_fast_seconds)."""
        pod = self._pod()
        return bool(pod and (pod.get("status") or {}).get("nominatedNodeName"))

    def _note_scheduling(self, latest: dict | None) -> None:
        """Add a progress message when the scheduling state changes: a new FailedScheduling
        reason, a node nominated (batch pods preempted there), the pod placed on its node."""
        pod = self._pod() or {}
        node = (pod.get("spec") or {}).get("nodeName")
        nominated = (pod.get("status") or {}).get("nominatedNodeName")
        if node:
            note = spawn_progress.starting(node)
        elif nominated:
            note = spawn_progress.preempting(nominated, self._batch_units_on(nominated))
        elif latest is not None and latest.get("reason") == "FailedScheduling":
            note = spawn_progress.waiting(latest.get("message") or "")
        else:
            return
        if not any(shown["message"] == note["message"] for shown in self._progress[-3:]):
            self._progress.append(note)

    def _batch_units_on(self, node: str) -> int:
        """Accelerator units batch pods hold on `node` now, as the shared inventory counts them."""
        platform = AiInfnSpawner._shared
        if platform is None:
            return 0
        per_node = platform.inventory.per_node(self._policy().groups)
        return sum(counts.batch for (_, name), counts in per_node.items() if name == node)

    async def progress(self):
        """Our messages (spawn_progress, in order) merged with KubeSpawner's pod events as both
        come; the bar never moves back."""
        upstream = aiter(super().progress())
        pending = asyncio.ensure_future(anext(upstream))
        sent, shown = 0, 0
        try:
            while True:
                while sent < len(self._progress):
                    note = spawn_progress.merged(self._progress[sent], shown)
                    sent, shown = sent + 1, note["progress"]
                    yield note
                await asyncio.wait({pending}, timeout=WATCH_SECONDS)
                if not pending.done():
                    continue
                try:
                    event = pending.result()
                except StopAsyncIteration:
                    break
                shown = max(shown, event.get("progress", shown))
                yield event
                pending = asyncio.ensure_future(anext(upstream))
            for note in self._progress[sent:]:
                yield spawn_progress.merged(note, shown)
        finally:
            pending.cancel()
            await asyncio.wait({pending})
            await upstream.aclose()

    def _crash(self) -> podfailure.Crash | None:
        pod = self._pod()
        if pod is None or pod["metadata"].get("deletionTimestamp"):
            return None
        return podfailure.crashed(pod, self.crash_restarts)

    async def _crash_error(self, crash: podfailure.Crash) -> UserError:
        """The failed container's exit and last log lines, with what we hold for the user masked."""
        secrets = podfailure.secret_values(self.api_token, await self.user.get_auth_state())
        excerpt = None
        if self.crash_log_lines:
            log = await self._container_log(crash.container)
            if log is not None:
                excerpt = podfailure.log_excerpt(
                    log, secrets, self.crash_log_lines, CRASH_LOG_BYTES
                )
        message = podfailure.user_message(
            crash, excerpt, secrets, show_log=self.crash_log_lines > 0
        )
        detail = (
            f"container {crash.container!r} ended with exit code {crash.exit_code} "
            f"({crash.reason or 'no reason'}) after {crash.restarts} restart(s)"
        )
        return UserError(message, reason="crash", log_detail=detail, status=500)

    async def _container_log(self, container: str) -> str | None:
        """The end of the container's latest log (pods/log), or None if it cannot be read."""

        async def read() -> str:
            response = await self.api.read_namespaced_pod_log(
                self.pod_name,
                self.namespace,
                container=container,
                tail_lines=self.crash_log_lines,
                limit_bytes=CRASH_LOG_READ_BYTES,
                _preload_content=False,
            )
            try:
                return (await response.read()).decode(errors="replace")
            finally:
                response.release()

        try:
            return await asyncio.wait_for(read(), self.k8s_api_request_timeout)
        except ApiException as error:
            self.log.warning(
                "Could not read the log of %s (%s): %s %s",
                self._log_name,
                container,
                error.status,
                error.reason,
            )
        except (TimeoutError, aiohttp.ClientError) as error:
            self.log.warning(
                "Could not read the log of %s (%s): %r", self._log_name, container, error
            )
        return None

    def get_state(self) -> dict:
        state = super().get_state()
        if self.accelerator_units:
            state["aiinfn_accelerator_units"] = self.accelerator_units
        if self.token_mounted:
            state["aiinfn_token_mounted"] = True
        return state

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        self.accelerator_units = int(state.get("aiinfn_accelerator_units", 0))
        self.token_mounted = bool(state.get("aiinfn_token_mounted", False))

    def clear_state(self) -> None:
        super().clear_state()
        self.accelerator_units = 0
        self.token_mounted = False
