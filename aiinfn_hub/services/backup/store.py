"""The backup service's Kubernetes side: its Jobs, their pods and logs, and the keys Secret.

Every call uses the service's own credentials in the one namespace it manages and returns plain
JSON. The service never mounts a repository: it creates Jobs and reads their logs. The keys
Secret is only ever extended (a passphrase is added once, never changed), with the
resourceVersion it was read at, so two requests cannot both add one."""

from __future__ import annotations

import base64
import secrets
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from ... import k8s, labels

PASSPHRASE_BYTES = 32
SECRET_ATTEMPTS = 5


class BackupStore:
    """Reads and writes the service's objects in its namespace."""

    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self.namespace = namespace
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)

    async def create_job(self, job: dict[str, Any]) -> dict[str, Any]:
        # The client serialises a plain dict body as it is; its hints name only V1Job.
        body: Any = job
        return await k8s.call_json(
            self.batch.create_namespaced_job(
                self.namespace, body, field_validation=k8s.STRICT, _preload_content=False
            )
        )

    async def get_job(self, name: str) -> dict[str, Any] | None:
        return await k8s.call_json_or_none(
            self.batch.read_namespaced_job(name, self.namespace, _preload_content=False)
        )

    async def list_jobs(self, selector: str) -> list[dict[str, Any]]:
        result = await k8s.call_json(
            self.batch.list_namespaced_job(
                self.namespace, label_selector=selector, _preload_content=False
            )
        )
        return result["items"]

    async def delete_job(self, name: str) -> None:
        """Delete a Job and its pod (background propagation); gone already is fine."""
        try:
            await k8s.call_json(
                self.batch.delete_namespaced_job(
                    name, self.namespace, propagation_policy="Background", _preload_content=False
                )
            )
        except ApiException as error:
            if error.status != 404:
                raise

    async def job_pod(self, job_name: str) -> dict[str, Any] | None:
        """The Job's pod (backoffLimit 0: at most one)."""
        result = await k8s.call_json(
            self.core.list_namespaced_pod(
                self.namespace,
                label_selector=f"{labels.JOB_NAME}={job_name}",
                _preload_content=False,
            )
        )
        return result["items"][0] if result["items"] else None

    async def log(self, pod: str, container: str, limit_bytes: int) -> str:
        return await k8s.call_text(
            self.core.read_namespaced_pod_log(
                pod,
                self.namespace,
                container=container,
                limit_bytes=limit_bytes,
                _preload_content=False,
            )
        )

    async def _secret(self, name: str) -> dict[str, Any] | None:
        return await k8s.call_json_or_none(
            self.core.read_namespaced_secret(name, self.namespace, _preload_content=False)
        )

    async def has_passphrase(self, secret_name: str, key: str) -> bool:
        secret = await self._secret(secret_name)
        return secret is not None and key in (secret.get("data") or {})

    async def ensure_passphrase(self, secret_name: str, key: str) -> bool:
        """Add a random passphrase for `key` unless there is one; True if this call added it."""
        for _ in range(SECRET_ATTEMPTS):
            secret = await self._secret(secret_name)
            if secret is not None and key in (secret.get("data") or {}):
                return False
            value = base64.b64encode(secrets.token_urlsafe(PASSPHRASE_BYTES).encode()).decode()
            try:
                body: Any
                if secret is None:
                    body = {"metadata": {"name": secret_name}, "type": "Opaque"}
                    body["data"] = {key: value}
                    await self.core.create_namespaced_secret(
                        self.namespace, body, field_validation=k8s.STRICT
                    )
                else:
                    body = {**secret, "data": {**(secret.get("data") or {}), key: value}}
                    await self.core.replace_namespaced_secret(
                        secret_name, self.namespace, body, field_validation=k8s.STRICT
                    )
                return True
            except ApiException as error:
                if error.status != 409:  # someone else wrote first: read again
                    raise
        raise RuntimeError(f"the keys Secret {secret_name}: still conflicting; try again")

    async def list_pods(self) -> list[dict[str, Any]]:
        """Every pod of the namespace, in one complete listing (the stale-lock rule needs it)."""
        result = await k8s.call_json(
            self.core.list_namespaced_pod(self.namespace, _preload_content=False)
        )
        return result["items"]

    async def read_config_map(self, name: str) -> tuple[dict[str, str], str | None]:
        """A ConfigMap's data and resourceVersion; ({}, None) when it does not exist."""
        found = await k8s.call_json_or_none(
            self.core.read_namespaced_config_map(name, self.namespace, _preload_content=False)
        )
        if found is None:
            return {}, None
        return dict(found.get("data") or {}), found["metadata"]["resourceVersion"]

    async def write_config_map(self, body: dict[str, Any], resource_version: str | None) -> bool:
        """Create (no version) or replace at the version read; False when someone wrote first."""
        request: Any = body
        name = body["metadata"]["name"]
        try:
            if resource_version is None:
                await self.core.create_namespaced_config_map(
                    self.namespace, request, field_validation=k8s.STRICT
                )
            else:
                request = {**body, "metadata": {**body["metadata"]}}
                request["metadata"]["resourceVersion"] = resource_version
                await self.core.replace_namespaced_config_map(
                    name, self.namespace, request, field_validation=k8s.STRICT
                )
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True
