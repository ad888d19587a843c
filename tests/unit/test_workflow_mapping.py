"""Snakemake jobs -> job service requests (snakemake_executor_plugin_aiinfn.mapping), as literal
requests, and the refusals that name the rule before anything is submitted."""

from __future__ import annotations

import pytest

from snakemake_executor_plugin_aiinfn import mapping
from snakemake_executor_plugin_aiinfn.mapping import Defaults, RuleError, Step

SCRIPT = "#!/bin/sh\npython -m snakemake --target-jobs 'train:lr=0.1'\n"
# What Snakemake gives every job of a remote executor, beside the rule's own resources.
STANDARD = {"_cores": 1, "_nodes": 1, "tmpdir": "<TBD>", "mem_mb": 1000, "mem_mib": 954}


def step(rule: str = "train", threads: int = 1, paths: tuple[str, ...] = (), **resources) -> Step:
    return Step(rule, 7, 1, threads, {**STANDARD, **resources}, SCRIPT, paths)


def test_a_gpu_step_maps_to_a_literal_request():
    body = mapping.request(
        step(
            threads=4,
            accelerator="t4",
            gpu=2,
            environment="ml-gpu",
            mem_mb=16000,
            mem_mib=15259,
            runtime=90,
            priority="high",
        ),
        Defaults(project="cms-ml"),
        "/home/jovyan/analysis",
        "run1",
    )
    assert body == {
        "name": "smk-train-7",
        "script": SCRIPT,
        "working_dir": "/home/jovyan/analysis",
        "cpu": "4",
        "memory": "15259Mi",
        "deadline_seconds": 5400,
        "accelerator": "t4",
        "count": 2,
        "idempotency_key": mapping.idempotency_key("run1", step()),
        "env": {"USER": "jovyan"},
        "environment": "ml-gpu",
        "project": "cms-ml",
        "priority": "high",
    }


def test_defaults_fill_what_a_rule_leaves_out_and_cpus_per_task_wins_over_threads():
    body = mapping.request(
        step(threads=8, cpus_per_task=2, runtime=0.5 * 2),
        Defaults(environment="cpu", accelerator="cpu"),
        "/juicefs/wf",
        "r",
        user="alice",
    )
    assert {k: body.get(k) for k in ("cpu", "deadline_seconds", "accelerator", "environment")} == {
        "cpu": "2",
        "deadline_seconds": 60,  # the service's least: a minute
        "accelerator": "cpu",
        "environment": "cpu",
    }
    assert body["env"] == {"USER": "alice"} and "volumes" not in body and "offload" not in body


def test_the_key_is_the_same_for_a_resent_submission_and_new_for_each_retry():
    first = mapping.idempotency_key("run", step())
    assert first == mapping.idempotency_key("run", step())
    retry = Step("train", 7, 2, 1, STANDARD, SCRIPT)
    assert (
        len({first, mapping.idempotency_key("run", retry), mapping.idempotency_key("x", step())})
        == 3
    )


def test_names_fit_the_service_pattern():
    assert mapping.job_name("Train_Model.v2", 12) == "smk-train-model-v2-12"
    assert mapping.job_name("___", 3) == "smk-rule-3"
    assert len(mapping.job_name("a" * 80, 123456)) <= 40
    group = mapping.job_name("pair", "0b5e1c3a-5f4e-4d7b-9c7e-2a1d3f4e5a6b")
    assert group == "smk-pair-0b5e1c3a-5f4e-4d7b-9c7e-2a1d3f4"


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ({"colour": "red"}, "rule train: unknown resource(s) colour"),
        ({"gpu": 1.5}, "rule train: resource gpu must be a whole number"),
        ({"gpu": 17}, "rule train: the job service would refuse it: invalid request: count"),
        ({"runtime": 8 * 24 * 60}, "rule train: runtime is over 10080 minutes"),
        ({"accelerator": 3}, "rule train: resource accelerator must be a name"),
        ({"accelerator": "T4!"}, "rule train: the job service would refuse it: invalid request: "),
        ({"offload": "sometimes"}, "rule train: resource offload must be one of never, may, only"),
        ({"offload": "may", "offloadable": 1}, "rule train: give offload or offloadable"),
        ({"mem_mb": 0, "mem_mib": 0}, "rule train: resource mem_mib must be at least 1"),
    ],
)
def test_values_the_service_would_refuse_are_refused_naming_the_rule(resources, message):
    with pytest.raises(RuleError) as refused:
        mapping.request(step(**resources), Defaults(), "/home/jovyan/wf", "r")
    assert str(refused.value).startswith(message), refused.value


def test_offloaded_steps_mount_only_what_remote_sites_can():
    only = mapping.request(
        step("simulate", offload="only", paths=("sim/a.csv",)), Defaults(), "/juicefs/wf", "r"
    )
    assert (only["offload"], only["volumes"]) == ("only", ["juicefs"])
    offloadable = mapping.request(step("simulate", offloadable=1), Defaults(), "/tmp/wf", "r")
    assert (offloadable["offload"], offloadable["volumes"]) == ("may", [])
    local = mapping.request(step("simulate", offloadable=0), Defaults(), "/home/jovyan/wf", "r")
    assert (local["offload"], "volumes" in local) == ("never", False)


@pytest.mark.parametrize(
    ("working_dir", "resources", "paths", "message"),
    [
        (
            "/home/jovyan/wf",
            {"offload": "only"},
            (),
            "rule simulate: an offloaded step may run at a remote site, which cannot mount home",
        ),
        (
            "/juicefs/wf",
            {"offload": "only"},
            ("/home/shared/cms-ml/calibration.root",),
            "rule simulate: an offloaded step may run at a remote site, which cannot mount "
            "projects",
        ),
        (
            "/juicefs/wf",
            {"offload": "may"},
            (),
            "rule simulate: a step that may run here or at a remote site cannot mount juicefs",
        ),
    ],
)
def test_offloaded_steps_reading_local_only_storage_are_refused(
    working_dir, resources, paths, message
):
    with pytest.raises(RuleError) as refused:
        mapping.request(step("simulate", paths=paths, **resources), Defaults(), working_dir, "r")
    assert str(refused.value).startswith(message), refused.value


def test_volume_kinds_by_longest_mount():
    mounts = {"home": "/home/jovyan", "projects": "/home/jovyan/projects"}
    assert mapping.volume_kind("/home/jovyan/projects/x/../y", mounts) == "projects"
    assert mapping.volume_kind("/home/jovyan", mounts) == "home"
    assert mapping.volume_kind("/home/jovyanx", mounts) is None


def test_listed_jobs_tell_snakemake_what_became_of_its_jobs():
    assert mapping.outcome(None) == "gone"
    assert mapping.outcome({"state": "queued", "failed": 0}) == "running"
    assert mapping.outcome({"state": "preempted", "failed": 0}) == "running"
    assert mapping.outcome({"state": "succeeded"}) == "succeeded"
    assert mapping.outcome({"state": "failed", "failed": 4}) == "failed"
    # A failed pod ends it for Snakemake, which retries itself (the Job would run it again).
    assert mapping.outcome({"state": "starting", "failed": 1}) == "failed"


def test_a_failure_message_has_the_reason_and_each_pods_log_tail():
    summary = {"id": "job-1", "state": "failed", "message": "exit code 3"}
    logs = {"pods": [{"pod": "job-1-a", "log": "line 1\nboom\n"}, {"pod": "job-1-b", "log": ""}]}
    assert mapping.failure_message(summary, logs) == (
        "job job-1 failed: exit code 3\nlast lines of the log of pod job-1-a:\nline 1\nboom\n"
    )
    stopped = mapping.failure_message({"id": "job-2", "state": "starting"}, None)
    assert (
        stopped
        == "job job-2 failed (stopped: its pod failed, and Snakemake decides about retries)\n"
    )
    assert "no longer listed" in mapping.failure_message(None, None)
