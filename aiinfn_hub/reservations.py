"""Reserve or fail fast: accelerator units promised to spawns the inventory cannot see yet. Pure.

Between "the user clicked Start" and "the scheduler bound the pod" the inventory still shows the
units as free. The spawner takes a hub-wide lock, checks free units minus what is already
promised, and either records a promise or refuses at once with a message that says what else is
free. The promise is dropped when the spawn ends (the bound pod is then in the inventory).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from .catalog import Catalog
from .errors import UserError
from .profiles import Availability, SpawnPlan


@dataclass
class Reservations:
    """Promises by server id (user/server name): (accelerator key, units)."""

    promised: dict[str, tuple[str, int]] = field(default_factory=dict)

    def pending(self, accelerator: str) -> int:
        return sum(units for key, units in self.promised.values() if key == accelerator)

    def promise(self, server: str, accelerator: str, units: int) -> None:
        self.promised[server] = (accelerator, units)

    def release(self, server: str) -> None:
        self.promised.pop(server, None)


def available(
    availability: Mapping[str, Availability], reservations: Reservations
) -> dict[str, Availability]:
    """Availability with the promised units taken off both free numbers (now, and if batch
    jobs stop): a spawn in flight takes idle units first, then those batch jobs hold."""
    result = {}
    for key, a in availability.items():
        pending = reservations.pending(key)
        result[key] = replace(
            a, free=max(0, a.free - pending), free_now=max(0, a.free_now - pending)
        )
    return result


def check(
    plan: SpawnPlan,
    catalog: Catalog,
    availability: Mapping[str, Availability],
    largest_block: int,
    allowed: set[str],
) -> None:
    """Raise UserError (503) unless `plan.count` units fit now, on one node.

    `availability` already has promises taken off; `largest_block` is the most free units of the
    chosen accelerator on any single eligible node; `allowed` are the keys the user may pick,
    for suggesting alternatives."""
    accelerator = plan.accelerator
    if accelerator.kind == "cpu" or not plan.count:
        return
    mine = availability.get(accelerator.key, Availability(0, 0, free_now=0))
    if mine.free >= plan.count and largest_block >= plan.count:
        return
    if mine.free >= plan.count:
        problem = (
            f"{mine.free} {accelerator.display_name} free in total, but no single node has "
            f"{plan.count} free"
        )
    else:
        problem = f"no {accelerator.display_name} free now ({mine.free}/{mine.total})"
    alternatives = [
        f"{catalog.accelerators[key].display_name} has {a.free} free"
        for key, a in availability.items()
        if key != accelerator.key
        and key in allowed
        and a.free > 0
        and catalog.accelerators[key].kind in ("gpu", "mig")
        and accelerator.kind in ("gpu", "mig")
    ]
    suffix = f"; {', '.join(alternatives[:3])}" if alternatives else ""
    raise UserError(problem + suffix, reason="capacity", status=503)
