"""AiInfnSpawner: KubeSpawner with the platform's safe defaults. Thin glue only; logic lives in
pure modules (profiles, volumes, policy) as they arrive."""

from __future__ import annotations

from kubespawner import KubeSpawner
from traitlets import default

from . import labels


class AiInfnSpawner(KubeSpawner):
    """A KubeSpawner whose pods pass Pod Security "restricted" without extra configuration."""

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
