"""A SpawnPlan -> the KubeSpawner settings that put the pod exactly on the chosen hardware. Pure.

Required node affinity on the chosen product / FPGA board (MIG profiles are their own resource),
never a virtual (offload) node, tolerations only for what was chosen and for the user's groups'
reserved nodes, CPU-only servers kept off accelerator nodes unless the admin allows it, and the
notebook PriorityClass so the scheduler preempts batch pods, never notebooks.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from . import labels
from .admin_files import quantity
from .profiles import SpawnPlan


@dataclass(frozen=True)
class PlacementSettings:
    """Admin settings that shape placement (the spawner's traits, gathered)."""

    priority_class: str
    reservation_taint_key: str
    accelerator_node_labels: tuple[str, ...]
    cpu_on_accelerator_nodes: bool


def node_selector_terms(plan: SpawnPlan, settings: PlacementSettings) -> list[dict[str, Any]]:
    expressions = [
        {"key": labels.VIRTUAL_NODE, "operator": "NotIn", "values": [labels.VIRTUAL_NODE_VALUE]}
    ]
    for key, value in sorted(plan.accelerator.node_labels.items()):
        expressions.append({"key": key, "operator": "In", "values": [value]})
    if plan.accelerator.kind == "cpu" and not settings.cpu_on_accelerator_nodes:
        expressions += [
            {"key": key, "operator": "DoesNotExist"} for key in settings.accelerator_node_labels
        ]
    return [{"matchExpressions": expressions}]


def tolerations(groups: Collection[str], reservation_taint_key: str) -> list[dict[str, Any]]:
    """Tolerate exactly the reserved nodes of the user's own groups."""
    return [
        {"key": reservation_taint_key, "operator": "Equal", "value": group, "effect": "NoSchedule"}
        for group in sorted(groups)
    ]


def spawner_traits(
    plan: SpawnPlan, groups: Collection[str], settings: PlacementSettings
) -> dict[str, Any]:
    """KubeSpawner trait values for this plan (applied with setattr by the spawner)."""
    resources = (
        {plan.accelerator.resource: str(plan.count)}
        if plan.accelerator.resource and plan.count
        else {}
    )
    return {
        "image": plan.image,
        "cpu_guarantee": quantity(plan.size.cpu),
        "cpu_limit": quantity(plan.size.cpu),
        "mem_guarantee": int(quantity(plan.size.memory)),
        "mem_limit": int(quantity(plan.size.memory)),
        "extra_resource_guarantees": dict(resources),
        "extra_resource_limits": dict(resources),
        "node_affinity_required": node_selector_terms(plan, settings),
        "tolerations": tolerations(groups, settings.reservation_taint_key),
        "priority_class_name": settings.priority_class,
        "extra_labels": {labels.ACCELERATOR: plan.accelerator.key},
    }
