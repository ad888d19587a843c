"""A stand-in for NVIDIA's dcgm-exporter, for the dev cluster's kwok GPUs (there is no GPU
here): it serves `/metrics` in dcgm-exporter's format, with its Kubernetes pod mapping (the
`namespace`, `pod` and `container` labels of the pod holding each GPU), for the pods it is told
about, at the utilisation it is told. Prometheus scrapes it like the real one; the culler's GPU
rule (docs/culling.md) reads DCGM_FI_DEV_GPU_UTIL from there. On the loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.server
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from aiinfn_hub import k8s

from .devcluster.processes import free_port

log = logging.getLogger("aiinfn_dev.dcgm")

GPU_RESOURCE = "nvidia.com/gpu"
GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"
MIG_ACTIVE = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
HELP = {
    GPU_UTIL: "GPU utilization (in %).",
    MIG_ACTIVE: "Ratio of time the graphics engine is active.",
}


@dataclass
class GpuPod:
    namespace: str
    pod: str
    node: str
    model: str
    utilisation: list[float]  # one per GPU the pod holds (a ratio for a MIG slice)
    container: str = "notebook"
    # A MIG slice ("1g.10gb"): it reports DCGM_FI_PROF_GR_ENGINE_ACTIVE per GPU instance, not
    # DCGM_FI_DEV_GPU_UTIL, as dcgm-exporter does for MIG.
    mig_profile: str = ""

    def series(self) -> list[tuple[str, str]]:
        """(metric, exposition line) per GPU or GPU instance."""
        metric = MIG_ACTIVE if self.mig_profile else GPU_UTIL
        lines = []
        for index, value in enumerate(self.utilisation):
            uuid = hashlib.sha256(f"{self.node}/{index}".encode()).hexdigest()[:32]
            labels = f'gpu="{index}",UUID="GPU-{uuid}",device="nvidia{index}",'
            if self.mig_profile:
                labels += f'GPU_I_PROFILE="{self.mig_profile}",GPU_I_ID="{index + 1}",'
            labels += (
                f'modelName="{self.model}",Hostname="{self.node}",container="{self.container}",'
                f'namespace="{self.namespace}",pod="{self.pod}"'
            )
            lines.append((metric, f"{metric}{{{labels}}} {value:g}\n"))
        return lines


@dataclass
class DcgmStandIn:
    """The exporter's state: what each pod's GPUs report. Thread-safe."""

    pods: dict[tuple[str, str], GpuPod] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: http.server.ThreadingHTTPServer | None = None

    @property
    def target(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.server_address[1]}"

    def set(self, gpu_pod: GpuPod) -> None:
        with self.lock:
            self.pods[gpu_pod.namespace, gpu_pod.pod] = gpu_pod

    def remove(self, namespace: str, pod: str) -> None:
        with self.lock:
            self.pods.pop((namespace, pod), None)

    def follow(self, pods: Iterable[Mapping[str, Any]], utilisation: float = 0.0) -> None:
        """Serve every bound, running pod of `pods` (Pod dicts, as the API server lists them)
        that holds whole GPUs, as dcgm-exporter's pod mapping would: new ones at `utilisation`,
        known ones at what they were set to; pods no longer listed are dropped (the demo calls
        this with its namespace's pods every few seconds)."""
        listed = {}
        for pod in pods:
            count, node = gpus_of(pod), pod.get("spec", {}).get("nodeName")
            if count and node and pod.get("status", {}).get("phase") == "Running":
                meta = pod["metadata"]
                listed[meta["namespace"], meta["name"]] = (node, count)
        with self.lock:
            for key in set(self.pods) - set(listed):
                del self.pods[key]
            for (namespace, name), (node, count) in listed.items():
                if (namespace, name) not in self.pods:
                    values = [utilisation] * count
                    self.pods[namespace, name] = GpuPod(namespace, name, node, "", values)

    def exposition(self) -> str:
        with self.lock:
            pods = list(self.pods.values())
        by_metric: dict[str, list[str]] = {GPU_UTIL: []}
        for entry in pods:
            for metric, line in entry.series():
                by_metric.setdefault(metric, []).append(line)
        return "".join(
            f"# HELP {metric} {HELP[metric]}\n# TYPE {metric} gauge\n" + "".join(lines)
            for metric, lines in by_metric.items()
        )

    def start(self) -> str:
        """Serve on a free loopback port; returns host:port for Prometheus."""
        exporter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = exporter.exposition().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.target

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def gpus_of(pod: Mapping[str, Any]) -> int:
    """Whole GPUs a Pod dict holds: its containers' nvidia.com/gpu limits (else requests)."""
    total = 0
    for container in pod.get("spec", {}).get("containers", []):
        resources = container.get("resources") or {}
        amount = (resources.get("limits") or {}).get(GPU_RESOURCE) or (
            resources.get("requests") or {}
        ).get(GPU_RESOURCE)
        total += int(amount or 0)
    return total


# What the listing thread does with each listing: serve those pods (default: follow them).
Observe = Callable[[DcgmStandIn, list[dict[str, Any]]], None]


@contextlib.contextmanager
def following(
    kubeconfig: str, namespace: str, every: float = 2.0, observe: Observe | None = None
) -> Iterator[DcgmStandIn]:
    """The stand-in on a free loopback port, serving the GPU pods of `namespace` as they come
    and go (listed every `every` seconds by a thread with its own event loop, each listing given
    to `observe`; by default new pods at 0%). Stopped on exit."""
    exporter = DcgmStandIn()
    exporter.start()
    stop = threading.Event()
    seen = observe or (lambda exporter, pods: exporter.follow(pods))
    thread = threading.Thread(
        target=lambda: asyncio.run(_follow(kubeconfig, namespace, exporter, every, stop, seen)),
        daemon=True,
    )
    thread.start()
    try:
        yield exporter
    finally:
        stop.set()
        thread.join(timeout=10)
        exporter.stop()


async def _follow(
    kubeconfig: str,
    namespace: str,
    exporter: DcgmStandIn,
    every: float,
    stop: threading.Event,
    observe: Observe,
) -> None:
    async with await k8s.api_client(kubeconfig) as api:
        core = client.CoreV1Api(api)
        while not stop.is_set():
            try:
                listed = await core.list_namespaced_pod(namespace)
                observe(exporter, api.sanitize_for_serialization(listed)["items"])
            except (ApiException, OSError) as error:
                log.warning("listing pods for the DCGM stand-in failed: %s", type(error).__name__)
            await asyncio.to_thread(stop.wait, every)
