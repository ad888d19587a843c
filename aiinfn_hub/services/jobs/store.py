"""The job service's Kubernetes side: Jobs, their sandbox ConfigMaps, Kueue Workloads, pods, logs,
and what bounds every job (Kueue's queues and flavors, the nodes; read only).

Every call uses the service's own credentials (its kubeconfig or in-cluster service account), in the
one namespace it manages (the cluster-wide objects are only listed), and returns plain JSON (no
model classes: a submission costs one create and no deserialisation). Errors are `k8s.ApiError`s,
kubernetes_asyncio ApiExceptions with the status and the server's message."""

from __future__ import annotations

import json

from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from ... import k8s, labels, names
from .manifests import COMPONENT, SANDBOX_COMPONENT, sandbox_owner

KUEUE_GROUP = "kueue.x-k8s.io"
KUEUE_VERSION = "v1beta2"
NOTEBOOK_COMPONENT = "singleuser-server"


def api_message(error: ApiException) -> str:
    """The API server's own message from an error body (for logs and refusals the user caused)."""
    try:
        return str(json.loads(error.body).get("message") or error.reason)
    except (TypeError, ValueError, AttributeError):
        return str(error.reason)


class JobStore:
    """Reads and writes the service's objects in its namespace."""

    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self.namespace = namespace
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    # -- jobs ------------------------------------------------------------------------------

    async def create_job(self, job: dict) -> dict:
        return await k8s.call_json(
            self.batch.create_namespaced_job(
                self.namespace, job, field_validation=k8s.STRICT, _preload_content=False
            )
        )

    async def get_job(self, name: str) -> dict | None:
        return await k8s.call_json_or_none(
            self.batch.read_namespaced_job(name, self.namespace, _preload_content=False)
        )

    async def list_jobs(self, owner: str | None) -> list[dict]:
        """The service's jobs, of one owner (by exact name) or of everyone."""
        selector = f"{labels.MANAGED_BY}={labels.MANAGED_BY_VALUE},{labels.COMPONENT}={COMPONENT}"
        if owner is not None:
            selector += f",{labels.OWNER}={names.label_value(owner)}"
        items = (
            await k8s.call_json(
                self.batch.list_namespaced_job(
                    self.namespace, label_selector=selector, _preload_content=False
                )
            )
        )["items"]
        if owner is not None:
            items = [
                j
                for j in items
                if (j["metadata"].get("annotations") or {}).get(labels.OWNER_NAME) == owner
            ]
        return items

    async def delete_job(self, name: str) -> bool:
        """Delete a Job, its pods, Workload and sandbox (owned objects go too); False if gone."""
        try:
            await k8s.call_json(
                self.batch.delete_namespaced_job(
                    name, self.namespace, propagation_policy="Background", _preload_content=False
                )
            )
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    # -- sandboxes -------------------------------------------------------------------------

    async def create_sandbox(self, configmap: dict) -> dict:
        return await k8s.call_json(
            self.core.create_namespaced_config_map(
                self.namespace, configmap, field_validation=k8s.STRICT, _preload_content=False
            )
        )

    async def get_sandbox(self, name: str) -> dict | None:
        return await k8s.call_json_or_none(
            self.core.read_namespaced_config_map(name, self.namespace, _preload_content=False)
        )

    async def replace_sandbox(self, configmap: dict) -> dict:
        name = configmap["metadata"]["name"]
        return await k8s.call_json(
            self.core.replace_namespaced_config_map(
                name, self.namespace, configmap, field_validation=k8s.STRICT, _preload_content=False
            )
        )

    async def adopt_sandbox(self, job: dict) -> None:
        """Make the Job own its sandbox ConfigMap."""
        body = sandbox_owner(job["metadata"]["name"], job["metadata"]["uid"])
        await k8s.call_json(
            self.core.patch_namespaced_config_map(
                job["metadata"]["name"],
                self.namespace,
                body,
                field_validation=k8s.STRICT,
                _preload_content=False,
            )
        )

    async def delete_sandbox(self, name: str) -> None:
        try:
            await k8s.call_json(
                self.core.delete_namespaced_config_map(name, self.namespace, _preload_content=False)
            )
        except ApiException as error:
            if error.status != 404:
                raise

    async def orphan_sandboxes(self) -> list[dict]:
        """Sandbox ConfigMaps no Job owns (left by submissions interrupted before a Job existed)."""
        selector = (
            f"{labels.MANAGED_BY}={labels.MANAGED_BY_VALUE},{labels.COMPONENT}={SANDBOX_COMPONENT}"
        )
        items = (
            await k8s.call_json(
                self.core.list_namespaced_config_map(
                    self.namespace, label_selector=selector, _preload_content=False
                )
            )
        )["items"]
        return [c for c in items if not c["metadata"].get("ownerReferences")]

    # -- Kueue, pods, notebooks --------------------------------------------------------------

    async def workloads(self, job_uid: str | None = None) -> list[dict]:
        """Kueue Workloads in the namespace (of one Job if given); none without Kueue installed."""
        selector = f"{labels.KUEUE_JOB_UID}={job_uid}" if job_uid else None
        try:
            result = await k8s.call_json(
                self.custom.list_namespaced_custom_object(
                    KUEUE_GROUP,
                    KUEUE_VERSION,
                    self.namespace,
                    "workloads",
                    label_selector=selector,
                    _preload_content=False,
                )
            )
        except ApiException as error:
            if error.status == 404:
                return []
            raise
        return result["items"]

    async def local_queues(self) -> list[dict]:
        return (
            await k8s.call_json(
                self.custom.list_namespaced_custom_object(
                    KUEUE_GROUP,
                    KUEUE_VERSION,
                    self.namespace,
                    "localqueues",
                    _preload_content=False,
                )
            )
        )["items"]

    async def cluster_objects(self, plural: str) -> list[dict]:
        """Kueue's cluster-wide objects of one kind (clusterqueues, resourceflavors)."""
        return (
            await k8s.call_json(
                self.custom.list_cluster_custom_object(
                    KUEUE_GROUP, KUEUE_VERSION, plural, _preload_content=False
                )
            )
        )["items"]

    async def nodes(self) -> list[dict]:
        return (await k8s.call_json(self.core.list_node(_preload_content=False)))["items"]

    async def pods(self, job_uid: str) -> list[dict]:
        result = await k8s.call_json(
            self.core.list_namespaced_pod(
                self.namespace,
                label_selector=f"{labels.JOB_CONTROLLER_UID}={job_uid}",
                _preload_content=False,
            )
        )
        return result["items"]

    async def log(self, pod: str, tail_lines: int, limit_bytes: int) -> str:
        return await k8s.call_text(
            self.core.read_namespaced_pod_log(
                pod,
                self.namespace,
                tail_lines=tail_lines,
                limit_bytes=limit_bytes,
                _preload_content=False,
            )
        )

    async def notebook_pod(self, username: str, server: str) -> dict | None:
        """The user's running notebook pod for this server name, matched on the exact names the
        spawner records in annotations (its label values depend on KubeSpawner's slug scheme)."""
        selector = f"component={NOTEBOOK_COMPONENT}"
        result = await k8s.call_json(
            self.core.list_namespaced_pod(
                self.namespace, label_selector=selector, _preload_content=False
            )
        )
        for pod in result["items"]:
            annotations = pod["metadata"].get("annotations") or {}
            if (
                annotations.get(labels.HUB_USERNAME) == username
                and annotations.get(labels.HUB_SERVERNAME, "") == server
                and not pod["metadata"].get("deletionTimestamp")
                and (pod.get("status") or {}).get("phase") == "Running"
            ):
                return pod
        return None
