"""The batch jobs a preemption stops for a server, read from the pods of the nominated node
(spawn_progress.batch_victims), and how the progress message names them."""

from __future__ import annotations

from aiinfn_hub import spawn_progress
from aiinfn_hub.spawn_progress import Victims

NOTEBOOK_PRIORITY = 1000


def job_pod(name, job, grace=20, deleted=None, priority=10, phase="Running"):
    """A pod of the batch/v1 Job `job`, as the API server lists it (deleted: its grace)."""
    metadata = {
        "name": name,
        "labels": {"batch.kubernetes.io/job-name": job, "job-name": job},
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job}],
    }
    if deleted is not None:
        metadata.update(
            deletionTimestamp="2026-01-01T00:00:20Z", deletionGracePeriodSeconds=deleted
        )
    return {
        "metadata": metadata,
        "spec": {"priority": priority, "terminationGracePeriodSeconds": grace},
        "status": {"phase": phase},
    }


NOTEBOOK = {
    "metadata": {"name": "jupyter-bob", "labels": {"component": "singleuser-server"}},
    "spec": {"priority": NOTEBOOK_PRIORITY, "terminationGracePeriodSeconds": 1},
    "status": {"phase": "Running"},
}


def test_the_terminating_batch_pods_are_the_victims_counted_by_job():
    pods = [
        job_pod("train-0-abc", "train", deleted=20),
        job_pod("train-1-def", "train", deleted=20),
        job_pod("sweep-0-ghi", "sweep", grace=45, deleted=45),
        job_pod("other-0-jkl", "other", grace=600),  # not stopped: another accelerator
        NOTEBOOK,
    ]
    assert spawn_progress.batch_victims(pods, NOTEBOOK_PRIORITY) == Victims(2, 45)


def test_the_deletion_grace_counts_over_the_spec_grace():
    # A pod deleted with a shorter grace than its spec's stops within the deletion's.
    pods = [job_pod("train-0-abc", "train", grace=600, deleted=5)]
    assert spawn_progress.batch_victims(pods, NOTEBOOK_PRIORITY) == Victims(1, 5)


def test_before_the_deletions_show_the_lower_priority_batch_pods_are_counted():
    pods = [
        job_pod("train-0-abc", "train", grace=20),
        job_pod("urgent-0-def", "urgent", grace=90, priority=NOTEBOOK_PRIORITY),
        NOTEBOOK,
    ]
    assert spawn_progress.batch_victims(pods, NOTEBOOK_PRIORITY) == Victims(1, 20)
    # Without the server's priority only deleted pods are known to be victims.
    assert spawn_progress.batch_victims(pods, None) == Victims(0, 0)


def test_finished_pods_and_notebooks_are_no_victims():
    pods = [
        job_pod("done-0-abc", "done", deleted=20, phase="Succeeded"),
        job_pod("crash-0-def", "crash", phase="Failed"),
        {**NOTEBOOK, "metadata": {**NOTEBOOK["metadata"], "deletionTimestamp": "x"}},
    ]
    assert spawn_progress.batch_victims(pods, NOTEBOOK_PRIORITY) == Victims(0, 0)


def test_a_kueue_queued_pod_without_a_job_counts_as_its_own_job():
    pod = {
        "metadata": {
            "name": "solo",
            "labels": {"kueue.x-k8s.io/queue-name": "project-qml"},
            "deletionTimestamp": "2026-01-01T00:00:30Z",
        },
        "spec": {"priority": 10},
        "status": {"phase": "Running"},
    }
    # No grace anywhere: the API server's default, 30 s.
    assert spawn_progress.batch_victims([pod, pod], NOTEBOOK_PRIORITY) == Victims(1, 30)


def test_the_message_names_the_jobs_the_node_and_the_longest_grace():
    assert spawn_progress.preempting("a100-node-2", 3, Victims(2, 45)) == {
        "progress": 25,
        "message": "Stopping 2 batch jobs on a100-node-2 to make room for this server (up to 45 s)",
    }
    assert spawn_progress.preempting("n1", 1, Victims(1, 0))["message"] == (
        "Stopping 1 batch job on n1 to make room for this server"
    )
    # No victim found (already gone, or in a namespace the hub does not read): the units.
    assert spawn_progress.preempting("n1", 0, Victims(0, 0))["message"] == (
        "Stopping batch jobs on n1 to make room for this server; each has its grace period to stop"
    )


def test_the_users_own_jobs_are_named_and_other_users_jobs_only_counted():
    mine = job_pod("train-0-abc", "job-1a2b", deleted=20)
    mine["metadata"]["annotations"] = {
        "aiinfn.infn.it/owner-name": "alice",
        "aiinfn.infn.it/display-name": "training",
    }
    theirs = job_pod("sim-0-def", "job-3c4d", deleted=20)
    theirs["metadata"]["annotations"] = {
        "aiinfn.infn.it/owner-name": "bob",
        "aiinfn.infn.it/display-name": "bob's secret plan",
    }
    victims = spawn_progress.batch_victims([mine, theirs], NOTEBOOK_PRIORITY, "alice")
    assert victims == Victims(2, 20, ("training",))
    assert spawn_progress.preempting("server2-a100", 2, victims)["message"] == (
        "Stopping 2 batch jobs on server2-a100 to make room for this server (up to 20 s): "
        "your job 'training', 1 job of another user"
    )
    victims = spawn_progress.batch_victims([theirs], NOTEBOOK_PRIORITY, "alice")
    assert victims == Victims(1, 20, ())
    assert "bob" not in spawn_progress.preempting("n1", 1, victims)["message"]
