"""The spawn form and its options: the form's profiles from the catalog, the user's policy and
what is free now; options from the form, a /hub/spawn link or the REST body validated into a
SpawnPlan by one path, and the plan's accelerator units reserved (docs/spawn.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any, NoReturn

from kubespawner import KubeSpawner
from kubespawner.clients import shared_client

from . import form, hubstate, names, profiles, reservations, spawn_progress
from .accounting import quota_gate
from .errors import HIDE_PREFILLED_TRACEBACK, OnlyPrefilled, UserError, to_http_error
from .inventory_watch import InventoryWatcher
from .policy import UserPolicy
from .profiles import Availability, SpawnPlan

INVENTORY_SYNC_WAIT = 10.0


async def synced_inventory(platform: hubstate.Platform, wait: float) -> bool:
    """Start the process-wide watcher once; True when its first lists are in."""
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


def availability(platform: hubstate.Platform, groups: Collection[str]) -> dict[str, Availability]:
    """What `groups` can get now: free units (batch pods yield) and idle ones, less those
    promised to spawns, and the batch jobs that would stop."""
    snapshot = platform.inventory.snapshot(groups)
    raw = {key: Availability.of(c) for key, c in snapshot.items()}
    return reservations.available(raw, platform.reservations)


def options_from_form(formdata: dict[str, list[str]]) -> dict[str, Any]:
    """The form's fields as user_options; a refusal is the HTTP error the page shows."""
    try:
        return profiles.options_from_form(formdata)
    except UserError as error:
        raise to_http_error(error) from None


def options_were_given(handler: Any) -> bool:
    """True when this spawn request carried options (form or REST body), False when JupyterHub
    reused the saved ones, which may no longer be allowed and then fall back to defaults."""
    request = getattr(handler, "request", None)
    return bool(request is not None and request.method == "POST" and request.body)


class SpawnOptions:
    """The options path of one AiInfnSpawner (`spawner`): its form, the options of a link until
    the next render, its plan and its reservation. Reads the spawner's shared platform state
    (`_platform()`, `_policy()`) and appends to its progress messages (`_progress`)."""

    def __init__(self, spawner: KubeSpawner) -> None:
        self.spawner = spawner
        # Options of a /hub/spawn link, valid for the user: the next form render shows them.
        self.link_options: dict[str, Any] | None = None

    @property
    def server_id(self) -> str:
        """The server's key in the reservations ledger."""
        return f"{self.spawner.user.name}/{self.spawner.name}"

    def held_elsewhere(self) -> int:
        """Accelerator units the user's other active servers hold."""
        return sum(
            getattr(other, "accelerator_units", 0)
            for other in self.spawner.user.spawners.values()
            if other is not self.spawner and other.active
        )

    # -- the form ----------------------------------------------------------------------------

    async def build_profiles(
        self, spawner: KubeSpawner, prefill: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """The form's profiles (KubeSpawner's profile_list, called with the spawner)."""
        platform = self.spawner._platform()
        policy = self.spawner._policy()
        synced = await synced_inventory(platform, wait=1.0)
        free = availability(platform, policy.groups) if synced else {}
        selected = prefill or self.saved_plan_options(policy)
        built = profiles.build(platform.catalog, free, policy, self.held_elsewhere(), selected)
        gate = self.quota_gate()
        if gate is not None:  # what is left of the user's GPU-hour quotas, on each card
            user = self.spawner.user.name
            found = await gate.standings(user, [])
            for profile in built:
                model = profile["slug"] if profile["aiinfn"]["kind"] != "cpu" else ""
                profile["aiinfn"]["quotas"] = gate.notes(found, user, model)
        return built

    def quota_gate(self) -> quota_gate.QuotaGate | None:
        """The hub's quota checks (docs/accounting.md, "Quotas"); None without quotas, and then
        no database query is made."""
        catalog = self.spawner._platform().catalog
        names = {key: a.display_name for key, a in catalog.accelerators.items()}
        return quota_gate.shared_gate(self.spawner.config, names, self.spawner.log)

    def saved_plan_options(self, policy: UserPolicy) -> dict[str, Any]:
        """The last options if they are still allowed, else nothing (the defaults apply)."""
        try:
            plan = profiles.resolve(
                self.spawner._platform().catalog,
                policy,
                self.spawner.user_options or {},
                self.held_elsewhere(),
            )
        except UserError:
            return {}
        return plan.as_options()

    async def render_form(self, spawner: KubeSpawner) -> str:
        """The spawn form (options_form, called with the spawner), pre-filled by a link once."""
        prefill, self.link_options = self.link_options, None
        notice = form.LINK_NOTICE if prefill is not None else ""
        return form.render(await self.build_profiles(spawner, prefill), notice)

    def from_query(self, query_data: dict[str, list[str]]) -> NoReturn:
        """Pre-fill the next form with a link's valid options, or refuse them (see the
        spawner's options_from_query)."""
        spawner = self.spawner
        try:
            options = profiles.options_from_query(query_data)
            plan = profiles.resolve(
                spawner._platform().catalog, spawner._policy(), options, self.held_elsewhere()
            )
        except UserError as error:
            spawner.log.info(
                "Refusing the spawn link options of %s: %s", spawner._log_name, error.log_detail
            )
            raise to_http_error(error) from None
        self.link_options = plan.as_options() if options else None
        spawner.log.addFilter(HIDE_PREFILLED_TRACEBACK)  # once: a Logger keeps each filter once
        spawner.log.info("Spawn link of %s only pre-fills the form", spawner._log_name)
        raise OnlyPrefilled()

    # -- spawning ----------------------------------------------------------------------------

    async def plan(self) -> tuple[SpawnPlan, UserPolicy]:
        """Validate user_options (one path for the form and the REST API) and reserve the
        units. Refusals are 4xx/503 HTTP errors, raised before any pod exists."""
        spawner = self.spawner
        try:
            names.username(spawner.user.name)
        except names.InvalidName as error:
            spawner.log.warning("Refusing to spawn for an invalid username: %s", error.log_detail)
            raise to_http_error(error) from None
        platform = spawner._platform()
        policy = spawner._policy()
        held = self.held_elsewhere()
        try:
            try:
                plan = profiles.resolve(platform.catalog, policy, spawner.user_options, held)
            except UserError as error:
                if options_were_given(spawner.handler):
                    raise
                spawner.log.info(
                    "Saved options of %s are no longer allowed (%s); using defaults",
                    spawner._log_name,
                    error.log_detail,
                )
                plan = profiles.resolve(platform.catalog, policy, {}, held)
            spawner._progress.append(spawn_progress.options_checked(plan))
            await self.check_quota(plan)
            await self.reserve(plan, policy)
        except UserError as error:
            spawner.log.warning("Refusing to spawn %s: %s", spawner._log_name, error.log_detail)
            raise to_http_error(error) from None
        return plan, policy

    async def check_quota(self, plan: SpawnPlan) -> None:
        """Refuse a server on an accelerator whose GPU-hour quota has no hours left (403 with
        the figures). A notebook server counts for its user, in no project."""
        gate = self.quota_gate()
        if gate is not None and plan.accelerator.kind != "cpu":
            await gate.check(self.spawner.user.name, plan.accelerator.key)

    async def reserve(self, plan: SpawnPlan, policy: UserPolicy) -> None:
        """Promise the plan's units to this server, or refuse when they are not free now."""
        if plan.accelerator.kind == "cpu":
            return
        platform = self.spawner._platform()
        if not await synced_inventory(platform, wait=INVENTORY_SYNC_WAIT):
            raise UserError(
                "accelerator availability is not known yet; try again in a moment",
                reason="capacity",
                status=503,
            )
        async with platform.lock:
            free = availability(platform, policy.groups)
            largest = platform.inventory.largest_free_block(
                plan.accelerator.key, policy.groups, preempt=True
            )
            allowed = {
                k for k in platform.catalog.accelerators if policy.rules.allows_accelerator(k)
            }
            reservations.check(plan, platform.catalog, free, largest, allowed)
            platform.reservations.promise(self.server_id, plan.accelerator.key, plan.count)
        self.spawner._progress.append(spawn_progress.reserved(plan))

    def release(self) -> None:
        """Drop this server's promise: its start has ended (placed, failed or cancelled)."""
        platform = self.spawner._shared
        if platform is not None:
            platform.reservations.release(self.server_id)

    def remove_when_failed(self) -> None:
        """Have a named server that has never run removed when this spawn has failed: JupyterHub
        keeps the record of a server whose start failed, and it would count against
        named_server_limit_per_user until the user deleted it. "Never run": no state saved,
        which JupyterHub does when a server stops (a refused or failed start included)."""
        spawner = self.spawner
        spawn = spawner._spawn_future
        if (
            not spawner.name
            or spawner.orm_spawner is None
            or spawner.orm_spawner.state is not None
            or spawn is None
        ):
            return

        def remove(future: asyncio.Future) -> None:
            # A done callback, so it runs before the handler that awaited the spawn resumes.
            user = spawner.user
            if (
                future.cancelled()
                or user.spawners.get(spawner.name) is not spawner
                or spawner.active
            ):
                return
            spawner.log.info("Removing %s: its first start was refused", spawner._log_name)
            spawner.db.delete(spawner.orm_spawner)
            user.spawners.pop(spawner.name, None)
            spawner.db.commit()

        spawn.add_done_callback(remove)
