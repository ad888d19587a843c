"""Job + Workload + pods -> what users see; queue positions; the rate limiter."""

import json

import pytest

from aiinfn_hub.services.jobs import status
from aiinfn_hub.services.ratelimit import RateLimiter, retry_after

PRIORITIES = {"low": "aiinfn-low", "normal": "aiinfn-normal"}


def job(suspend=True, conditions=(), active=0, **status_fields):
    return {
        "metadata": {
            "name": "job-1",
            "uid": "u1",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {
                "aiinfn.infn.it/job-kind": "batch",
                "kueue.x-k8s.io/queue-name": "project-cms-2dml",
                "kueue.x-k8s.io/priority-class": "aiinfn-low",
            },
            "annotations": {
                "aiinfn.infn.it/owner-name": "alice",
                "aiinfn.infn.it/display-name": "train",
                "aiinfn.infn.it/project": "cms-ml",
                "aiinfn.infn.it/request": json.dumps({"offloadable": True}),
            },
        },
        "spec": {
            "suspend": suspend,
            "completions": 2,
            "template": {"metadata": {"labels": {"aiinfn.infn.it/accelerator": "t4"}}},
        },
        "status": {
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": "2026-01-01T01:00:00Z"}
                for t in conditions
            ],
            "active": active,
            **status_fields,
        },
    }


def workload(
    name,
    uid,
    queue="project-cms-2dml",
    priority=100,
    created="2026-01-01T00:00:00Z",
    conditions=(),
    admission=None,
    owner="u1",
    message=None,
):
    return {
        "metadata": {
            "name": name,
            "uid": uid,
            "creationTimestamp": created,
            "ownerReferences": [{"kind": "Job", "uid": owner}],
        },
        "spec": {"queueName": queue, "priority": priority},
        "status": {
            "conditions": [
                {
                    "type": c[0],
                    "status": c[1],
                    "reason": c[2] if len(c) > 2 else "",
                    "message": message or "",
                }
                for c in conditions
            ],
            **({"admission": admission} if admission else {}),
        },
    }


def RUNNING_ONCE(pods_ready):  # noqa: N802 (reads as a constant in the table)
    """The Workload of an admitted job, with Kueue's PodsReady condition."""
    return workload(
        "w",
        "w1",
        conditions=[
            ("QuotaReserved", "True", "QuotaReserved"),
            ("Admitted", "True", "Admitted"),
            pods_ready,
        ],
    )


ADMISSION = {
    "clusterQueue": "project-cms-2dml",
    "podSetAssignments": [
        {"name": "main", "flavors": {"cpu": "t4", "memory": "t4", "nvidia.com/gpu": "t4"}}
    ],
}


@pytest.mark.parametrize(
    "the_job, the_workload, expected",
    [
        (job(), None, "queued"),
        (job(), workload("w", "w1", conditions=[("QuotaReserved", "False")]), "queued"),
        (job(), workload("w", "w1", conditions=[("QuotaReserved", "True")]), "admitted"),
        (
            job(),
            workload("w", "w1", conditions=[("QuotaReserved", "False"), ("Evicted", "True")]),
            "requeued",
        ),
        (job(suspend=False), None, "starting"),
        (job(suspend=False, active=2), None, "running"),
        # An active pod is not a running one: `ready` counts those that run.
        (
            job(suspend=False, active=1, ready=0),
            RUNNING_ONCE(("PodsReady", "False", "WaitForStart")),
            "starting",
        ),
        (
            job(suspend=False, active=1, ready=1),
            RUNNING_ONCE(("PodsReady", "True", "Started")),
            "running",
        ),
        # Preempted by Kueue: suspended, its quota released, waiting in the queue again.
        (
            job(),
            workload(
                "w",
                "w1",
                conditions=[
                    ("QuotaReserved", "False", "Pending"),
                    ("Evicted", "True", "Preempted"),
                    ("Preempted", "True", "InClusterQueue"),
                ],
            ),
            "preempted",
        ),
        (
            job(),
            workload(
                "w",
                "w1",
                conditions=[
                    ("QuotaReserved", "False", "Pending"),
                    ("Evicted", "True", "PodsReadyTimeout"),
                ],
            ),
            "requeued",
        ),
        # Preempted by the scheduler (a notebook took the node): still admitted, the replacement pod
        # Pending; the pod failure policy did not count it as a failure, a crash would have.
        (
            job(suspend=False, active=1, ready=0),
            RUNNING_ONCE(("PodsReady", "False", "WaitForRecovery")),
            "preempted",
        ),
        (
            job(suspend=False, active=1, ready=0, failed=1),
            RUNNING_ONCE(("PodsReady", "False", "WaitForRecovery")),
            "starting",
        ),
        (job(suspend=False, conditions=["Complete"]), None, "succeeded"),
        (job(suspend=False, conditions=["Failed"]), None, "failed"),
    ],
)
def test_states(the_job, the_workload, expected):
    assert status.state(the_job, the_workload) == expected


def test_positions_follow_priority_then_age_per_queue():
    workloads = [
        workload("a", "1", priority=100, created="2026-01-01T00:00:03Z"),
        workload("b", "2", priority=500, created="2026-01-01T00:00:05Z"),
        workload("c", "3", priority=100, created="2026-01-01T00:00:01Z"),
        workload("d", "4", conditions=[("QuotaReserved", "True")]),
        workload("e", "5", conditions=[("Finished", "True")]),
        workload("f", "6", queue="project-qml"),
        workload("g", "0", priority=100, created="2026-01-01T00:00:03Z"),
    ]
    assert status.positions(workloads) == {"2": 1, "3": 2, "0": 3, "1": 4, "6": 1}


def test_a_queued_job_shows_its_place_and_kueues_reason():
    pending = workload(
        "w",
        "w1",
        conditions=[("QuotaReserved", "False")],
        message="couldn't assign flavors to pod set main: "
        "insufficient unused quota for nvidia.com/gpu in flavor t4, 1 more needed",
    )
    summary = status.summarize(job(), pending, PRIORITIES, position=3)
    assert summary == {
        "id": "job-1",
        "name": "train",
        "owner": "alice",
        "kind": "batch",
        "project": "cms-ml",
        "queue": "project-cms-2dml",
        "priority": "low",
        "offload": "may",
        "offloadable": True,
        "confidential": False,
        "sites": None,
        "accelerator": "t4",
        "state": "queued",
        "created": "2026-01-01T00:00:00Z",
        "started": None,
        "finished": None,
        "completions": 2,
        "succeeded": 0,
        "failed": 0,
        "active": 0,
        "admission": None,
        "site": None,
        "position": 3,
        "message": "waiting for quota: t4 needs 1 more GPU free (the rest is in use by other work)",
    }


def test_a_queued_job_says_which_of_its_flavors_is_short_of_what():
    kueue_says = (
        "couldn't assign flavors to pod set main: flavor a30 doesn't match node affinity, "
        "insufficient quota for nvidia.com/gpu in flavor leonardo, previously considered "
        "podsets requests (0) + current podset request (2) > maximum capacity (1), "
        "insufficient unused quota for memory in flavor a100, 8Gi more needed, "
        "insufficient unused quota for nvidia.com/gpu in flavor a100, 1 more needed, "
        "untolerated taint {fpga: true} in flavor u250"
    )
    assert status.quota_shortfalls(kueue_says) == [
        "a100 needs 8Gi more memory free (the rest is in use by other work)",
        "a100 needs 1 more GPU free (the rest is in use by other work)",
        "leonardo can never hold it: the job asks 2 GPU, the project's quota there is 1",
    ]
    pending = workload("w", "w1", conditions=[("QuotaReserved", "False", "Pending")])
    pending["status"]["conditions"][0]["message"] = kueue_says
    summary = status.summarize(job(), pending, PRIORITIES, position=1)
    assert summary["message"].startswith("waiting for quota: a100 needs 8Gi more memory free")
    assert "a30" not in summary["message"] and "u250" not in summary["message"]


def test_a_pending_message_that_names_no_quota_is_kueues_own_cut_short():
    pending = workload("w", "w1", conditions=[("QuotaReserved", "False", "Pending")])
    pending["status"]["conditions"][0]["message"] = "flavor x not found " * 40
    summary = status.summarize(job(), pending, PRIORITIES, position=1)
    assert summary["message"] == ("flavor x not found " * 40)[:300]


def test_a_job_preempted_by_kueue_says_so_in_our_words():
    evicted = workload(
        "w",
        "w1",
        conditions=[
            ("QuotaReserved", "False", "Pending"),
            ("Evicted", "True", "Preempted"),
            ("Preempted", "True", "InClusterQueue"),
        ],
        message="Preempted to accommodate a workload (UID: 1f0c, JobUID: 9a2e) "
        "due to prioritization in the ClusterQueue",
    )
    summary = status.summarize(job(), evicted, PRIORITIES, position=2)
    assert (summary["state"], summary["position"], summary["admission"]) == ("preempted", 2, None)
    assert summary["message"] == (
        "preempted by a higher-priority job of the same project; "
        "waiting in the queue to be admitted again"
    )


def test_a_job_whose_stopped_pods_could_not_start_again_is_requeued_in_our_words():
    evicted = workload(
        "w",
        "w1",
        conditions=[("QuotaReserved", "False", "Pending"), ("Evicted", "True", "PodsReadyTimeout")],
        message="Exceeded the PodsReady timeout default/job-1",
    )
    evicted["status"]["conditions"][0]["message"] = "couldn't assign flavors"
    summary = status.summarize(job(), evicted, PRIORITIES, position=2)
    assert (summary["state"], summary["position"]) == ("requeued", 2)
    assert summary["message"] == (
        "requeued: its pods were stopped (a notebook took their accelerator, say) and could not "
        "start again; it waits in the queue and runs again when a node has room"
    )


def test_a_job_evicted_for_another_reason_shows_kueues_reason():
    evicted = workload(
        "w",
        "w1",
        conditions=[("QuotaReserved", "False", "Pending"), ("Evicted", "True", "Deactivated")],
        message="The workload is deactivated",
    )
    summary = status.summarize(job(), evicted, PRIORITIES, position=2)
    assert (summary["state"], summary["message"]) == ("requeued", "The workload is deactivated")


def test_a_job_whose_quota_allows_it_but_no_node_has_room_says_so():
    kueue_says = (
        "couldn't assign flavors to pod set main: topology \"aiinfn-nodes\" doesn't allow to "
        'fit any of 1 pod(s). Total nodes: 1; excluded: resource "nvidia.com/gpu": 1'
    )
    pending = workload("w", "w1", conditions=[("QuotaReserved", "False", "Pending")])
    pending["status"]["conditions"][0]["message"] = kueue_says
    summary = status.summarize(job(), pending, PRIORITIES, position=1)
    assert summary["state"] == "queued"
    assert summary["message"] == (
        "waiting for a node with room: the project's quota allows this job, but the nodes that "
        f"could run it are in use (by notebooks or other jobs) (Kueue: {kueue_says})"
    )


def test_a_job_whose_pod_the_scheduler_preempted_is_not_running_while_its_replacement_waits():
    """The issue's case: a notebook took the A30, the Job made a replacement pod, which is
    Pending; the Job still counts it active."""
    the_job = job(suspend=False, active=1, ready=0, failed=0, startTime="2026-01-01T00:01:00Z")
    the_job["spec"]["template"]["metadata"]["labels"]["aiinfn.infn.it/accelerator"] = "a30"
    replacement = {
        "metadata": {"name": "job-1-0-z", "annotations": {}},
        "spec": {},
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/14 nodes are available: 1 Insufficient nvidia.com/gpu.",
                }
            ],
        },
    }
    waiting = RUNNING_ONCE(("PodsReady", "False", "WaitForRecovery"))
    waiting["status"]["admission"] = ADMISSION
    summary = status.summarize(the_job, waiting, PRIORITIES, pods=[replacement])
    assert (summary["state"], summary["active"], summary["position"]) == ("preempted", 1, None)
    assert summary["message"] == (
        "preempted by a higher-priority workload; its replacement pod is waiting for a "
        "free a30 (0/14 nodes are available: 1 Insufficient nvidia.com/gpu.)"
    )
    listed = status.summarize(the_job, waiting, PRIORITIES)
    assert (listed["state"], listed["message"]) == (
        "preempted",
        "preempted by a higher-priority workload; its replacement pod is waiting for a free a30",
    )


def test_an_admitted_job_shows_the_flavors_and_its_pods():
    admitted = workload(
        "w", "w1", conditions=[("QuotaReserved", "True"), ("Admitted", "True")], admission=ADMISSION
    )
    pods = [
        {
            "metadata": {
                "name": "job-1-1-x",
                "annotations": {"batch.kubernetes.io/job-completion-index": "1"},
            },
            "spec": {"nodeName": "server1-t4"},
            "status": {"phase": "Running"},
        },
        {
            "metadata": {
                "name": "job-1-0-y",
                "annotations": {"batch.kubernetes.io/job-completion-index": "0"},
            },
            "spec": {},
            "status": {"phase": "Pending"},
        },
    ]
    summary = status.summarize(
        job(suspend=False, active=1, startTime="2026-01-01T00:01:00Z"),
        admitted,
        PRIORITIES,
        position=None,
        pods=pods,
    )
    assert summary["state"] == "running" and summary["started"] == "2026-01-01T00:01:00Z"
    assert summary["admission"] == {
        "cluster_queue": "project-cms-2dml",
        "flavors": {"cpu": "t4", "memory": "t4", "nvidia.com/gpu": "t4"},
    }
    assert summary["message"] is None and summary["position"] is None
    assert summary["site"] == "local"
    assert summary["pods"] == [
        {"name": "job-1-0-y", "index": 0, "phase": "Pending", "node": None, "site": None},
        {
            "name": "job-1-1-x",
            "index": 1,
            "phase": "Running",
            "node": "server1-t4",
            "site": "local",
        },
    ]


def test_a_job_kueue_sent_to_a_remote_site_says_so():
    """Kueue put the remote flavor's node label on the template (and so on the pods)."""
    remote = {"cpu": "interlink-infn-t1", "memory": "interlink-infn-t1"}
    admitted = workload(
        "w",
        "w1",
        conditions=[("QuotaReserved", "True"), ("Admitted", "True")],
        admission={
            "clusterQueue": "project-cms-2dml",
            "podSetAssignments": [{"name": "main", "flavors": remote}],
        },
    )
    selector = {"virtual-node.interlink/type": "virtual-kubelet"}
    running = job(suspend=False, active=1)
    running["spec"]["template"]["spec"] = {"nodeSelector": selector}
    pod = {
        "metadata": {"name": "job-1-0-z"},
        "spec": {"nodeName": "interlink-infn-t1", "nodeSelector": selector},
        "status": {"phase": "Running"},
    }
    summary = status.summarize(running, admitted, PRIORITIES, pods=[pod])
    assert summary["site"] == "interlink-infn-t1"
    assert summary["pods"][0]["site"] == "interlink-infn-t1"
    assert status.site(job(suspend=True), admitted) is None
    # A site's flavor also puts the site label on the pods: the site is named by it.
    selector["virtual-node.interlink/site"] = "infn-t1-htcondor"
    summary = status.summarize(running, admitted, PRIORITIES, pods=[pod])
    assert summary["site"] == "infn-t1-htcondor"
    assert summary["pods"][0]["site"] == "infn-t1-htcondor"


@pytest.mark.parametrize(
    "sites, expected",
    [(None, None), ("", []), ("infn-t1-htcondor,podman-vm", ["infn-t1-htcondor", "podman-vm"])],
)
def test_the_summary_lists_the_sites_that_accept_an_offloadable_job(sites, expected):
    queued = job()
    if sites is not None:
        queued["metadata"]["annotations"]["aiinfn.infn.it/sites"] = sites
    assert status.summarize(queued, None, PRIORITIES)["sites"] == expected


@pytest.mark.parametrize(
    "request_document, offload, offloadable",
    [({}, "never", False), ({"offloadable": True}, "may", True)]
    + [({"offload": "only"}, "only", True), ({"offload": "never"}, "never", False)]
    + [({"offload": "may", "confidential": True}, "never", False)],
)
def test_the_summary_says_where_a_job_may_run(request_document, offload, offloadable):
    queued = job()
    queued["metadata"]["annotations"]["aiinfn.infn.it/request"] = json.dumps(request_document)
    summary = status.summarize(queued, None, PRIORITIES)
    assert (summary["offload"], summary["offloadable"]) == (offload, offloadable)


def test_a_failed_job_is_finished_when_it_failed():
    summary = status.summarize(
        job(suspend=False, conditions=["Failed"], failed=4), None, PRIORITIES
    )
    assert (summary["state"], summary["finished"], summary["failed"]) == (
        "failed",
        "2026-01-01T01:00:00Z",
        4,
    )


def test_workloads_belong_to_their_job():
    assert status.owner_uid(workload("w", "w1", owner="job-uid")) == "job-uid"
    assert status.owner_uid({"metadata": {"name": "w"}}) is None


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_token_buckets_allow_a_burst_then_the_rate():
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.take("alice") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("alice") == pytest.approx(0.5)
    assert limiter.take("bob") == 0.0
    clock.now += 0.5
    assert limiter.take("alice") == 0.0
    assert limiter.take("alice") == pytest.approx(0.5)
    clock.now += 60
    assert [limiter.take("alice") for _ in range(4)][-1] == pytest.approx(0.5)
    assert retry_after(0.01) == "1" and retry_after(2.2) == "3"


def test_full_buckets_are_forgotten_when_the_table_grows(monkeypatch):
    monkeypatch.setattr("aiinfn_hub.services.ratelimit.PRUNE_ABOVE", 10)
    clock = Clock()
    limiter = RateLimiter(rate=1.0, burst=2, clock=clock)
    for i in range(10):
        limiter.take(f"user{i}")
    clock.now += 5
    limiter.take("late")
    assert set(limiter._buckets) == {"late"}
    with pytest.raises(ValueError):
        RateLimiter(rate=0, burst=1)


def failed_pod(name, node, finished, exit_code=1, message=None, site=None):
    terminated = {"exitCode": exit_code, "reason": "Error", "finishedAt": finished}
    if message:
        terminated["message"] = message
    selector = {
        "virtual-node.interlink/site": site,
        "virtual-node.interlink/type": "virtual-kubelet",
    }
    return {
        "metadata": {"name": name},
        "spec": {"nodeName": node, "nodeSelector": selector if site else {}},
        "status": {
            "phase": "Failed",
            "containerStatuses": [{"name": "job", "state": {"terminated": terminated}}],
        },
    }


def failed_job(reason, failed):
    failed_job = job(suspend=False, failed=failed)
    failed_job["status"]["conditions"] = [
        {"type": "Failed", "status": "True", "reason": reason, "message": "Kubernetes' words"}
    ]
    return failed_job


def test_a_failed_job_says_why_and_how_its_last_attempt_ended_and_where():
    pods = [
        failed_pod(
            "job-1-0-b",
            "vk-podman-vm",
            "2026-01-01T00:02:00Z",
            site="podman-vm",
            message="the remote site (vk-podman-vm) failed the job",
        ),
        failed_pod("job-1-0-a", "cpu-node-1", "2026-01-01T00:01:00Z", exit_code=2),
    ]
    summary = status.summarize(failed_job("BackoffLimitExceeded", 2), None, PRIORITIES, None, pods)
    assert summary["message"] == (
        "it failed 2 times, its retry limit; its last attempt, at podman-vm: container 'job' "
        "failed (exit code 1; the remote site (vk-podman-vm) failed the job)"
    )
    summary = status.summarize(
        failed_job("BackoffLimitExceeded", 1), None, PRIORITIES, None, pods[1:]
    )
    assert summary["message"] == (
        "it failed 1 time, its retry limit; its last attempt, on cpu-node-1: container 'job' "
        "failed (exit code 2)"
    )


@pytest.mark.parametrize(
    "reason, message",
    [
        ("DeadlineExceeded", "it ran past its deadline (deadline_seconds)"),
        ("PodFailurePolicy", "Kubernetes' words"),
    ],
)
def test_a_failed_job_without_pods_says_why_from_its_condition(reason, message):
    assert status.summarize(failed_job(reason, 1), None, PRIORITIES)["message"] == message
