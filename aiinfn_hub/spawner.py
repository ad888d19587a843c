"""AiInfnSpawner: KubeSpawner with the accelerator-aware spawn page. Thin glue only.

The logic lives in pure modules: catalog (what exists), policy (who may take what), profiles
(form and validation), placement (where the pod goes), reservations (reserve or fail fast),
inventory (what is free now), volumes/identity/tokens (storage, uid/gids, the access-token Secret).
The spawner's stateful parts are collaborators it owns: spawn_options (form, options, reservation),
spawn_storage (storage, identity, token Secret), spawn_watch (start watchdog, progress) with
spawn_crash (a crash-looping server's error).
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from functools import cached_property
from typing import Any

from jupyterhub.utils import maybe_future
from kubernetes_asyncio.client.rest import ApiException
from kubespawner import KubeSpawner
from traitlets import Float, Instance, Integer, default

from . import hubstate, k8s, labels, metrics, placement, spawn_options, spawn_progress
from .errors import UserError, to_http_error
from .platform_config import AiInfnPlatform
from .policy import UserPolicy, for_user
from .spawn_options import SpawnOptions
from .spawn_storage import SpawnStorage
from .spawn_watch import StartWatch


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
    # Accelerator units this server holds; kept in the hub's state so limits survive restarts.
    accelerator_units = 0
    # Whether the running pod mounts the access-token Secret (kept in state; spawn_storage).
    token_mounted = False
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

    # -- shared state and collaborators ----------------------------------------------------

    @default("platform_settings")
    def _default_platform_settings(self) -> AiInfnPlatform:
        return AiInfnPlatform(parent=self)

    @staticmethod
    def shared_platform(settings: AiInfnPlatform) -> hubstate.Platform:
        """The hub process's platform state, built from `settings` on first use (by the first
        spawner, or at hub start when accounting needs the inventory watch at once)."""
        if AiInfnSpawner._shared is None:
            AiInfnSpawner._shared = hubstate.load(settings)
        return AiInfnSpawner._shared

    def _platform(self) -> hubstate.Platform:
        return self.shared_platform(self.platform_settings)

    def _policy(self) -> UserPolicy:
        platform = self._platform()
        return for_user(
            platform.default_rules, platform.group_rules, [g.name for g in self.user.groups]
        )

    @cached_property
    def _options(self) -> SpawnOptions:
        return SpawnOptions(self)

    @cached_property
    def _storage(self) -> SpawnStorage:
        return SpawnStorage(self)

    @cached_property
    def _watch(self) -> StartWatch:
        return StartWatch(self)

    # -- the form ----------------------------------------------------------------------------

    @default("profile_list")
    def _default_profile_list(self):
        return self._options.build_profiles

    @default("options_form")
    def _default_options_form(self):
        return self._options.render_form

    @default("options_from_form")
    def _default_options_from_form(self):
        return spawn_options.options_from_form

    def options_from_query(self, query_data: dict[str, list[str]]) -> dict[str, Any]:
        """Never return: JupyterHub starts a server on a GET of /hub/spawn?<options>, so a link on
        any site could start one for a logged-in user. Valid options only pre-fill the form (the
        next render); starting takes the form's POST with its _xsrf. Invalid ones are refused."""
        self._options.from_query(query_data)

    # -- spawning ----------------------------------------------------------------------------

    async def load_user_options(self) -> None:
        """Validate, reserve and place (_load_user_options). A refusal creates no pod, and a named
        server that never ran is removed once the refusal is recorded (remove_when_failed)."""
        try:
            await self._load_user_options()
        except Exception:
            self._options.remove_when_failed()
            raise

    async def _load_user_options(self) -> None:
        """Validate user_options and reserve the units (spawn_options), then set the pod's image,
        resources, placement and storage. Refusals are 4xx/503, never a pod."""
        plan, policy = await self._options.plan()
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
            await self._storage.apply(plan, policy.groups)
        except UserError as error:
            self.log.warning("Refusing to spawn %s: %s", self._log_name, error.log_detail)
            raise to_http_error(error) from None

    async def start(self):
        """KubeSpawner's start, abandoned as soon as the pod cannot start (spawn_watch).
        KubeSpawner.start() only wraps its _start in the future its progress() follows."""
        self._progress = []
        start = super().start()
        try:
            return await self._watch.start(start)
        except Exception as error:
            detail = k8s.unavailable(error)
            if detail is None:
                metrics.count_refusal(error)
                raise
            # The API server throttled or failed the start: say so, not "500" (an outage, not a
            # refusal: not counted as one).
            self.log.warning("Spawn of %s failed: Kubernetes API: %s", self._log_name, detail)
            raise to_http_error(unavailable_error(detail)) from error
        finally:
            self._options.release()

    async def _start_reflector(self, kind: str, reflector_class: type, replace=False, **kwargs):
        """KubeSpawner's shared reflector, started anew when the one it holds is dead: its first
        list failed (the API server was down at the first spawn), or its watch gave up. KubeSpawner
        keeps such a reflector, and every spawn then waited its whole start_timeout for a pod
        the reflector never saw."""
        current = type(self).reflectors.get(self._get_reflector_key(kind))
        if current is not None and not replace and reflector_dead(current):
            self.log.warning("The %s reflector has stopped; starting it again", kind)
            replace = True
        return await super()._start_reflector(kind, reflector_class, replace=replace, **kwargs)

    async def _make_create_pod_request(self, pod, request_timeout) -> bool:
        """KubeSpawner's one try (True: created; False: try again, within
        k8s_api_request_retry_timeout), except that a throttled create (429) waits its
        Retry-After and tries again, and a refusal is logged without the pod: its environment
        holds the server's API token."""
        name = pod.metadata.name
        try:
            create = self.api.create_namespaced_pod(
                self.namespace, pod, field_validation=k8s.STRICT
            )
            await asyncio.wait_for(create, request_timeout)
            return True
        except TimeoutError:
            return False
        except ApiException as error:
            if error.status == 429:
                wait = k8s.retry_after(error, cap=request_timeout)
                self.log.warning("Creating pod %s throttled (429); again in %.1fs", name, wait)
                await asyncio.sleep(wait)
                return False
            if error.status != 409:
                self.log.error("Creating pod %s failed: %s %s", name, error.status, error.reason)
                raise
            self.log.info("Found existing pod %s, deleting it to start again", name)
            await self.stop(True)
            return False

    async def progress(self):
        """Our messages (spawn_progress, in order) merged with KubeSpawner's pod events as both
        come; the bar never moves back."""
        events = self._watch.progress(aiter(super().progress()))
        async with aclosing(events):
            async for event in events:
                yield event

    async def poll(self):
        status = await super().poll()
        if status is None and self.token_mounted:
            await self._storage.renew_token()
        return status

    async def run_post_stop_hook(self) -> None:
        """Delete the token Secret once JupyterHub has stopped the server. It calls this on
        every stop, also where it never calls stop(): a server whose pod never existed (a start
        the hub was killed in). KubeSpawner's own stop() calls, in a start, must keep it."""
        await maybe_future(super().run_post_stop_hook())
        await self._storage.forget_token()

    async def delete_forever(self) -> None:
        await super().delete_forever()
        await self._storage.forget_token()

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


def reflector_dead(reflector: Any) -> bool:
    """A KubeSpawner reflector that will never see another change: its first list failed, or its
    watch task ended without being stopped (it gives up after its backoff passes 32 s)."""
    loaded = reflector.first_load_future
    if loaded.done() and (loaded.cancelled() or loaded.exception() is not None):
        return True
    task = reflector.watch_task
    return task is not None and task.done() and not reflector._stopping


def unavailable_error(detail: str) -> UserError:
    """The start's failure when the Kubernetes API could not act on it (k8s.unavailable)."""
    return UserError(
        "the cluster could not start your server right now; try again in a minute",
        reason="unavailable",
        log_detail=f"Kubernetes API unavailable: {detail}",
        status=503,
    )
