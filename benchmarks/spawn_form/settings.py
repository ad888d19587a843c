"""What the spawn-form benchmark measures at which scale, its targets, and its log line."""

from __future__ import annotations

from dataclasses import dataclass

CLUSTER_NAME = "bench"
CONCURRENCY = 32
PAGE_SIZE = 500  # as InventoryWatcher
NOTEBOOK_NAMESPACES = ("bench-notebooks-0", "bench-notebooks-1")
BATCH_NAMESPACES = ("bench-batch-0", "bench-batch-1")
BENCH_LABEL = "aiinfn.infn.it/bench"
IMAGES = {
    "gpu": "harbor.cloud.infn.it/ai-infn/ml-gpu:2025.10",
    "mig": "harbor.cloud.infn.it/ai-infn/ml-gpu:2025.10",
    "fpga": "harbor.cloud.infn.it/ai-infn/fpga:2025.10",
    "cpu": "harbor.cloud.infn.it/ai-infn/cpu:2025.10",
}
# Everything allowed, so no profile is disabled by policy and every card shows live counts.
ALLOW_ALL = {
    "accelerators": "*",
    "environments": "*",
    "custom_images": True,
    "max_accelerators": 16,
}
USER_GROUPS = ("ai-infn-users",)

# Targets from the issue.
TARGET_RENDER_P95_MS = 5.0
TARGET_SPEEDUP = 100.0
TARGET_MEMORY_MB = 50.0
TARGET_EVENT_US = 50.0


@dataclass(frozen=True)
class Scale:
    key: str
    title: str
    topology: str
    pods: int
    renders: int
    baseline_renders: int


FULL = (
    Scale("small", "AI_INFN scale", "ai-infn", 200, 2000, 50),
    Scale("large", "large", "synthetic-1000", 20000, 500, 10),
)
QUICK = (
    Scale("small", "AI_INFN scale", "ai-infn", 200, 500, 20),
    Scale("large", "large (quick)", "synthetic-1000", 5000, 200, 5),
)
