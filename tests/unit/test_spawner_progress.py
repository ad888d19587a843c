"""The spawner's own progress messages (aiinfn_hub.spawn_progress), as users read them."""

from __future__ import annotations

from aiinfn_hub import spawn_progress
from aiinfn_hub.catalog import Accelerator, Size
from aiinfn_hub.profiles import SpawnPlan

A100 = Accelerator("a100", "NVIDIA A100", "gpu", resource="nvidia.com/gpu")
CPU = Accelerator("cpu", "CPU only", "cpu")
SMALL = Size("small", "Small (2 CPU, 8 GB)", "2", "8Gi")


def test_options_checked_names_the_choice_as_the_spawn_page_does():
    plan = SpawnPlan(A100, 2, "registry/torch:1", "torch", SMALL)
    assert spawn_progress.options_checked(plan) == {
        "progress": 5,
        "message": "Options checked: 2 × NVIDIA A100, torch, size Small (2 CPU, 8 GB)",
    }


def test_a_custom_image_and_cpu_only_are_named_without_a_count():
    plan = SpawnPlan(CPU, 1, "registry/mine:2", None, SMALL)
    assert spawn_progress.options_checked(plan)["message"] == (
        "Options checked: CPU only, image registry/mine:2, size Small (2 CPU, 8 GB)"
    )


def test_reserved_says_how_many_units_of_which_model():
    assert spawn_progress.reserved(SpawnPlan(A100, 1, "i", "torch", SMALL)) == {
        "progress": 10,
        "message": "Reserved 1 unit of NVIDIA A100 until the scheduler places the server",
    }
    assert spawn_progress.reserved(SpawnPlan(A100, 3, "i", "torch", SMALL))["message"].startswith(
        "Reserved 3 units of NVIDIA A100"
    )


def test_identity_and_token_steps():
    assert spawn_progress.identity_assigned(100123, 100123) == {
        "progress": 15,
        "message": "Storage identity assigned: uid 100123, gid 100123",
    }
    assert spawn_progress.token_written() == {
        "progress": 20,
        "message": "Access token written for the server (a Kubernetes Secret)",
    }


def test_scheduler_messages_carry_its_reason_the_preemption_and_the_node():
    assert spawn_progress.waiting(" 0/3 nodes are available: 1 Insufficient cpu. ") == {
        "progress": 25,
        "message": "Waiting for the scheduler: 0/3 nodes are available: 1 Insufficient cpu.",
    }
    assert spawn_progress.waiting("")["message"] == "Waiting for the scheduler: no reason given"
    assert spawn_progress.preempting("server2-a30", 1, spawn_progress.Victims(1, 20)) == {
        "progress": 25,
        "message": "Stopping 1 batch job on server2-a30 to make room for this server (up to 20 s)",
    }
    # The victims unknown (their pods could not be listed): the units the inventory counts.
    assert spawn_progress.preempting("server2-a30", 1) == {
        "progress": 25,
        "message": "Stopping batch jobs holding 1 accelerator unit(s) on server2-a30 to make "
        "room for this server; each has its grace period to stop",
    }
    assert spawn_progress.preempting("n1", 0)["message"].startswith("Stopping batch jobs on n1 ")
    assert spawn_progress.starting("n1") == {"progress": 25, "message": "Placed on n1; starting"}


def test_merged_never_moves_the_bar_back():
    note = spawn_progress.token_written()
    assert spawn_progress.merged(note, 63) == {**note, "progress": 63}
    assert spawn_progress.merged(note, 0) == note
    assert spawn_progress.merged({"message": "m"}, 7) == {"message": "m", "progress": 7}
