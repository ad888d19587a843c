"""AiInfnSpawner: KubeSpawner with the accelerator-aware spawn page. Thin glue only.

The logic lives in pure modules: catalog (what exists), policy (who may take what), profiles
(form and validation), placement (where the pod goes), reservations (reserve or fail fast),
inventory (what is free now).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from kubespawner import KubeSpawner
from kubespawner.clients import shared_client
from traitlets import Bool, Dict, Float, List, Unicode, default

from . import catalog, form, hubstate, labels, placement, profiles, reservations
from .errors import UserError, to_http_error
from .inventory_watch import InventoryWatcher
from .policy import UserPolicy, for_user
from .profiles import Availability

INVENTORY_SYNC_WAIT = 10.0


class AiInfnSpawner(KubeSpawner):
    """A KubeSpawner whose users pick an accelerator, an environment and a size from the catalog,
    see what is free right now, and land exactly on the hardware they picked."""

    catalog_file = Unicode(
        str(catalog.default_path()),
        config=True,
        help="Path of the platform catalog YAML (accelerators, environments, sizes). Checked at hub start.",
    )
    default_policy = Dict(
        {"accelerators": "*", "environments": "*", "max_accelerators": 1},
        config=True,
        help="""Rules for every user: accelerators and environments ("*" or a list of catalog keys),
        custom_images (bool), max_accelerators (units held at once over all servers), max_cpu and
        max_memory (largest server size). Group rules add to these.""",
    )
    group_policies = Dict(
        config=True,
        help="""Rules per group name, same fields as default_policy. A user in several groups gets
        the union: every key any group allows and the largest caps.""",
    )
    notebook_priority_class = Unicode(
        "aiinfn-notebook",
        config=True,
        help="PriorityClass of notebook pods; it must rank above the batch class so batch yields.",
    )
    reservation_taint_key = Unicode(
        "reserved",
        config=True,
        help="Taint key that reserves a node for a group (value: the group name). Members tolerate it.",
    )
    accelerator_node_labels = List(
        Unicode(),
        ["nvidia.com/gpu.present", "xilinx.com/fpga.board"],
        config=True,
        help="Labels marking accelerator nodes; CPU-only servers avoid nodes carrying any of them.",
    )
    cpu_on_accelerator_nodes = Bool(
        False, config=True, help="Allow CPU-only servers on accelerator nodes."
    )
    fail_fast_seconds = Float(
        10.0,
        config=True,
        help="Give up a spawn whose pod the scheduler still cannot place after this many seconds.",
    )

    _shared: hubstate.Platform | None = None
    # Accelerator units this server holds; kept in the hub's state so limits survive restarts.
    accelerator_units = 0

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

    @default("extra_labels")
    def _default_extra_labels(self) -> dict:
        return {labels.MANAGED_BY: labels.MANAGED_BY_VALUE, labels.PART_OF: labels.PART_OF_VALUE}

    # -- shared state ----------------------------------------------------------------------

    def _platform(self) -> hubstate.Platform:
        if AiInfnSpawner._shared is None:
            AiInfnSpawner._shared = hubstate.load(
                self.catalog_file, self.default_policy, self.group_policies, self.reservation_taint_key
            )
        return AiInfnSpawner._shared

    async def _synced_inventory(self, wait: float) -> bool:
        """Start the process-wide watcher once; True when its first lists are in."""
        platform = self._platform()
        if platform.watcher is None:
            platform.watcher = InventoryWatcher(shared_client("CoreV1Api").api_client, platform.inventory)
            platform.watcher_start = asyncio.ensure_future(platform.watcher.start(wait=False))
        if not platform.watcher.synced.is_set():
            try:
                await asyncio.wait_for(asyncio.shield(platform.watcher.synced.wait()), wait)
            except asyncio.TimeoutError:
                return False
        return True

    def _policy(self) -> UserPolicy:
        platform = self._platform()
        return for_user(platform.default_rules, platform.group_rules, [g.name for g in self.user.groups])

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
        raw = {key: Availability(free=c.free_if_preempted, total=c.total, batch=c.batch) for key, c in snapshot.items()}
        return reservations.available(raw, platform.reservations)

    # -- the form ----------------------------------------------------------------------------

    @default("profile_list")
    def _default_profile_list(self):
        return self._build_profiles

    async def _build_profiles(self, spawner: "AiInfnSpawner") -> list[dict[str, Any]]:
        platform = self._platform()
        policy = self._policy()
        synced = await self._synced_inventory(wait=1.0)
        availability = self._availability(policy) if synced else {}
        selected = self._saved_plan_options(policy)
        return profiles.build(platform.catalog, availability, policy, self._held_elsewhere(), selected)

    def _saved_plan_options(self, policy: UserPolicy) -> dict[str, Any]:
        """The last options if they are still allowed, else nothing (the defaults apply)."""
        try:
            plan = profiles.resolve(self._platform().catalog, policy, self.user_options or {}, self._held_elsewhere())
        except UserError:
            return {}
        return plan.as_options()

    @default("options_form")
    def _default_options_form(self):
        return self._render_form

    async def _render_form(self, spawner: "AiInfnSpawner") -> str:
        return form.render(await self._build_profiles(spawner))

    @default("options_from_form")
    def _default_options_from_form(self):
        return self._options_from_form

    def _options_from_form(self, formdata: dict[str, list[str]]) -> dict[str, Any]:
        try:
            return profiles.options_from_form(formdata)
        except UserError as error:
            raise to_http_error(error) from None

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
        """Validate user_options (one path for the form and the REST API), reserve the units,
        and set the pod's image, resources and placement. Refusals are 4xx/503, never a pod."""
        platform = self._platform()
        policy = self._policy()
        held = self._held_elsewhere()
        try:
            try:
                plan = profiles.resolve(platform.catalog, policy, self.user_options, held)
            except UserError as error:
                if self._options_were_given():
                    raise
                self.log.info("Saved options of %s are no longer allowed (%s); using defaults",
                              self._log_name, error.log_detail)
                plan = profiles.resolve(platform.catalog, policy, {}, held)
            await self._reserve(plan, policy)
        except UserError as error:
            self.log.warning("Refusing to spawn %s: %s", self._log_name, error.log_detail)
            raise to_http_error(error) from None
        self.accelerator_units = plan.count if plan.accelerator.kind != "cpu" else 0
        settings = placement.PlacementSettings(
            priority_class=self.notebook_priority_class,
            reservation_taint_key=self.reservation_taint_key,
            accelerator_node_labels=tuple(self.accelerator_node_labels),
            cpu_on_accelerator_nodes=self.cpu_on_accelerator_nodes,
        )
        for name, value in placement.spawner_traits(plan, policy.groups, settings).items():
            if name == "extra_labels":
                value = {**self.extra_labels, **value}
            setattr(self, name, value)

    async def _reserve(self, plan: profiles.SpawnPlan, policy: UserPolicy) -> None:
        if plan.accelerator.kind == "cpu":
            return
        platform = self._platform()
        if not await self._synced_inventory(wait=INVENTORY_SYNC_WAIT):
            raise UserError("accelerator availability is not known yet; try again in a moment",
                            reason="capacity", status=503)
        async with platform.lock:
            availability = self._availability(policy)
            largest = platform.inventory.largest_free_block(plan.accelerator.key, policy.groups, preempt=True)
            allowed = {k for k in platform.catalog.accelerators if policy.rules.allows_accelerator(k)}
            reservations.check(plan, platform.catalog, availability, largest, allowed)
            platform.reservations.promise(self._server_id, plan.accelerator.key, plan.count)

    async def _start(self):
        """KubeSpawner's start, abandoned within seconds if the scheduler cannot place the pod."""
        try:
            start = asyncio.ensure_future(super()._start())
            watchdog = asyncio.ensure_future(self._fail_if_unschedulable())
            await asyncio.wait({start, watchdog}, return_when=asyncio.FIRST_COMPLETED)
            if watchdog.done() and not watchdog.cancelled() and watchdog.exception():
                start.cancel()
                raise watchdog.exception()
            watchdog.cancel()
            return await start
        finally:
            if AiInfnSpawner._shared is not None:
                AiInfnSpawner._shared.reservations.release(self._server_id)

    async def _fail_if_unschedulable(self) -> None:
        """Raise once FailedScheduling has been the pod's latest word for fail_fast_seconds."""
        first_seen = None
        while True:
            await asyncio.sleep(0.5)
            events = self.events if self.event_reflector else []
            latest = events[-1] if events else None
            if latest is None or latest.get("reason") != "FailedScheduling":
                first_seen = None
                continue
            first_seen = first_seen or time.monotonic()
            if time.monotonic() - first_seen >= self.fail_fast_seconds:
                error = UserError(f"no node can host this server now: {latest.get('message', '')}",
                                  reason="capacity", status=503)
                self.log.warning("Giving up spawn of %s: %s", self._log_name, error.log_detail)
                raise to_http_error(error)

    def get_state(self) -> dict:
        state = super().get_state()
        if self.accelerator_units:
            state["aiinfn_accelerator_units"] = self.accelerator_units
        return state

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        self.accelerator_units = int(state.get("aiinfn_accelerator_units", 0))

    def clear_state(self) -> None:
        super().clear_state()
        self.accelerator_units = 0
