"""A server's storage, storage identity and access-token Secret: the volumes of the user's current
projects (volumes.py), their uid/gids (identity.py) and the token Secret (tokens.py), kept fresh
while the server runs and deleted when the user's last server stops."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from kubernetes_asyncio.client import ApiClient
from kubespawner import KubeSpawner
from kubespawner.clients import shared_client

from . import names, profiles, spawn_progress, tokens, volumes
from .errors import UserError
from .identity import IdentityStore
from .storage_config import AiInfnStorage

# One identity store per namespace in a hub process (it caches the uid/gid records).
IDENTITY_STORES: dict[str, IdentityStore] = {}


def api_client() -> ApiClient:
    """The client KubeSpawner shares in this hub process."""
    return shared_client("CoreV1Api").api_client


class SpawnStorage:
    """Storage and token of one AiInfnSpawner (`spawner`): sets its volumes, mounts, init
    containers, security context, environment and uid/gids, its `token_mounted` state, and
    appends to its progress messages (`_progress`)."""

    def __init__(self, spawner: KubeSpawner) -> None:
        self.spawner = spawner
        self._configured: dict[str, Any] | None = None
        # The digest of the token last written (memory only: after a hub restart the first
        # poll writes it again).
        self._token_fingerprint: str | None = None

    def configured_value(self, name: str) -> Any:
        """A trait as configured, before any spawn replaced it (our values add to the admin's)."""
        spawner = self.spawner
        if self._configured is None:
            self._configured = {
                "volumes": list(spawner._sorted_dict_values(spawner.volumes)),
                "volume_mounts": list(spawner._sorted_dict_values(spawner.volume_mounts)),
                "init_containers": list(spawner._sorted_dict_values(spawner.init_containers)),
                "pod_security_context": dict(spawner.pod_security_context),
                "environment": dict(spawner.environment),
            }
        return self._configured[name]

    async def apply(self, plan: profiles.SpawnPlan, groups: Collection[str]) -> None:
        """Volumes for the user's current projects, their uid/gids and their access-token
        Secret."""
        spawner = self.spawner
        settings = AiInfnStorage(parent=spawner).settings()
        username = names.username(spawner.user.name)
        projects = tuple(p.key for p in spawner._platform().catalog.projects_of(groups))
        curator = (settings.envs_curator_group,) if settings.envs_curator_group in groups else ()
        store = IDENTITY_STORES.get(spawner.namespace)
        if store is None:
            store = IDENTITY_STORES[spawner.namespace] = IdentityStore(
                api_client(), spawner.namespace, settings
            )
        identity = await store.identity(username, projects + curator)
        token = tokens.access_token(await spawner.user.get_auth_state())
        user = volumes.StorageUser(username, identity, projects, token=token is not None)
        storage = volumes.build(
            settings,
            user,
            plan.size.scratch or settings.default_scratch_size,
            plan.size.shm or settings.default_shm_size,
            spawner.image,
        )
        spawner.volumes = [*self.configured_value("volumes"), *storage.volumes]
        spawner.volume_mounts = [*self.configured_value("volume_mounts"), *storage.mounts]
        spawner.init_containers = [
            *self.configured_value("init_containers"),
            *storage.init_containers,
        ]
        spawner.pod_security_context = {
            **self.configured_value("pod_security_context"),
            **storage.security_context,
        }
        spawner.environment = {**self.configured_value("environment"), **storage.environment}
        spawner.uid, spawner.gid, spawner.fs_gid = identity.uid, identity.gid, identity.gid
        spawner.supplemental_gids = identity.supplemental_gids
        spawner._progress.append(spawn_progress.identity_assigned(identity.uid, identity.gid))
        spawner.token_mounted = token is not None
        if token is not None:
            await self.write_token(username, token)
            spawner._progress.append(spawn_progress.token_written())

    async def write_token(self, username: str, token: str) -> None:
        try:
            await tokens.sync(
                api_client(),
                self.spawner.namespace,
                username,
                token,
                exists=self._token_fingerprint is not None,
            )
        except tokens.TokenSyncError as error:
            raise UserError(
                "your access token could not be stored for the server; try again",
                reason="token",
                log_detail=str(error),
                status=503,
            ) from None
        self._token_fingerprint = tokens.fingerprint(token)

    async def renew_token(self) -> None:
        """Rewrite the Secret if the hub holds a different access token now (after a refresh)."""
        spawner = self.spawner
        try:
            token = tokens.access_token(await spawner.user.get_auth_state())
            if token is None or tokens.fingerprint(token) == self._token_fingerprint:
                return
            await self.write_token(names.username(spawner.user.name), token)
            spawner.log.info("Access-token Secret of %s renewed", spawner._log_name)
        except UserError as error:
            spawner.log.warning(
                "Could not renew the access-token Secret of %s: %s",
                spawner._log_name,
                error.log_detail,
            )
        except Exception:
            # The server keeps running with the previous token; the next poll tries again.
            spawner.log.exception(
                "Unexpected error renewing the access-token Secret of %s", spawner._log_name
            )

    async def forget_token(self) -> None:
        """Delete the Secret once none of the user's servers is running or starting."""
        spawner = self.spawner
        self._token_fingerprint = None
        if any(other.active for other in spawner.user.spawners.values() if other is not spawner):
            return
        try:
            username = names.username(spawner.user.name)
        except names.InvalidName:
            return  # such a user never got a Secret
        try:
            if await tokens.delete(api_client(), spawner.namespace, username):
                spawner.log.info("Access-token Secret of %s deleted", spawner.user.name)
        except tokens.TokenSyncError as error:
            spawner.log.warning(
                "Could not delete the access-token Secret of %s: %s", spawner.user.name, error
            )
