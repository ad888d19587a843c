"""What the pod runner reports: container statuses, phase, conditions, patches and events, as
literals."""

import pytest
from aiinfn_dev.devcluster import podstatus

C = {"name": "notebook", "image": "img"}
T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:00:05Z"
POD = {
    "metadata": {"name": "nb", "namespace": "ns", "uid": "u-1"},
    "spec": {"nodeName": "node-1", "containers": [C]},
    "status": {
        "phase": "Pending",
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": T0},
            {"type": "Ready", "status": "False", "lastTransitionTime": T0},
        ],
    },
}


def test_container_statuses_as_literals():
    assert podstatus.waiting(C, "ContainerCreating") == {
        "name": "notebook",
        "image": "img",
        "ready": False,
        "started": False,
        "restartCount": 0,
        "state": {"waiting": {"reason": "ContainerCreating"}},
    }
    assert podstatus.running(C, T0, True, 2, {"terminated": {"exitCode": 1}}) == {
        "name": "notebook",
        "image": "img",
        "ready": True,
        "started": True,
        "restartCount": 2,
        "lastState": {"terminated": {"exitCode": 1}},
        "state": {"running": {"startedAt": T0}},
    }
    assert podstatus.terminated(C, 0, T1, T0) == {
        "name": "notebook",
        "image": "img",
        "ready": False,
        "started": False,
        "restartCount": 0,
        "state": {
            "terminated": {"exitCode": 0, "reason": "Completed", "startedAt": T0, "finishedAt": T1}
        },
    }
    assert podstatus.terminated(C, 128, T1, reason="StartError", message="exec: no such file")[
        "state"
    ] == {
        "terminated": {
            "exitCode": 128,
            "reason": "StartError",
            "finishedAt": T1,
            "message": "exec: no such file",
        }
    }
    assert podstatus.terminated(C, 137, T1)["state"]["terminated"]["reason"] == "Error"


@pytest.mark.parametrize(
    "policy, code, restart",
    [
        ("Always", 0, True),
        ("Always", 1, True),
        ("OnFailure", 0, False),
        ("OnFailure", 2, True),
        ("Never", 0, False),
        ("Never", 137, False),
    ],
)
def test_restart_policy(policy, code, restart):
    assert podstatus.should_restart(policy, code) is restart


def test_fallback_message_is_the_end_of_the_log_as_the_kubelet_takes_it():
    log = b"".join(b"%s stdout F line %d\n" % (T0.encode(), i) for i in range(100))
    log += T1.encode() + b" stderr P refusing /home/x: \n" + T1.encode() + b" stderr F owned by 0\n"
    message = podstatus.fallback_message(log)
    assert message.splitlines()[0] == "line 21" and len(message.splitlines()) == 80
    assert message.endswith("line 99\nrefusing /home/x: owned by 0\n")
    long = podstatus.fallback_message(b"%s stdout F %s\n" % (T0.encode(), b"x" * 100) * 30)
    assert len(long) == 2048 and long.endswith("x" * 100 + "\n")
    assert podstatus.fallback_message(b"") == ""


def test_crash_loop_back_off_doubles_up_to_five_minutes():
    assert [podstatus.restart_delay(n) for n in (1, 2, 3, 5, 6, 20)] == [10, 20, 40, 160, 300, 300]


RUN = podstatus.running(C, T0, True)
DONE = podstatus.terminated(C, 0, T1)
FAIL = podstatus.terminated(C, 1, T1)
CREATING = podstatus.waiting(C, "ContainerCreating")
BACKOFF = podstatus.waiting(
    C, "CrashLoopBackOff", restart_count=1, last_state={"terminated": FAIL["state"]["terminated"]}
)


@pytest.mark.parametrize(
    "policy, init, main, phase",
    [
        ("Never", [], [CREATING], "Pending"),
        ("Never", [], [RUN], "Running"),
        ("Never", [], [DONE], "Succeeded"),
        ("Never", [], [FAIL], "Failed"),
        ("Never", [], [DONE, FAIL], "Failed"),
        ("Never", [], [RUN, CREATING], "Pending"),
        ("OnFailure", [], [BACKOFF], "Running"),
        ("OnFailure", [], [DONE], "Succeeded"),
        ("Always", [], [DONE], "Running"),
        ("Never", [RUN], [CREATING], "Pending"),
        ("Never", [FAIL], [CREATING], "Failed"),
        ("OnFailure", [FAIL], [CREATING], "Pending"),
        ("Never", [DONE], [RUN], "Running"),
        ("Never", [], [], "Pending"),
    ],
)
def test_phase(policy, init, main, phase):
    assert podstatus.phase(policy, init, main) == phase


def test_terminal_phase_of_a_deleted_pod():
    assert podstatus.terminal_phase([DONE]) == "Succeeded"
    assert podstatus.terminal_phase([DONE, podstatus.terminated(C, 143, T1)]) == "Failed"


def test_status_patch_keeps_unchanged_transition_times_and_replaces_container_lists():
    patch = podstatus.status_patch(
        POD, "Running", [], [podstatus.running(C, T0, False)], "127.64.0.254", "127.0.0.1", T0, T1
    )
    unready = {
        "lastProbeTime": None,
        "lastTransitionTime": T0,
        "reason": "ContainersNotReady",
        "message": "containers with unready status: [notebook]",
    }
    assert patch == {
        "status": {
            "phase": "Running",
            "conditions": [
                {
                    "type": "PodReadyToStartContainers",
                    "status": "True",
                    "lastProbeTime": None,
                    "lastTransitionTime": T1,
                },
                {
                    "type": "Initialized",
                    "status": "True",
                    "lastProbeTime": None,
                    "lastTransitionTime": T1,
                },
                {"type": "ContainersReady", "status": "False", **unready, "lastTransitionTime": T1},
                {"type": "Ready", "status": "False", **unready},
            ],
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.64.0.254",
            "podIPs": [{"ip": "127.64.0.254"}],
            "startTime": T0,
            "containerStatuses": [podstatus.running(C, T0, False)],
        }
    }


def test_conditions_of_a_pod_waiting_for_init_and_of_a_finished_pod():
    init = [{"name": "storage-init", "image": "img", "state": {"running": {"startedAt": T0}}}]
    waiting = podstatus.conditions([], T1, "Pending", init, [CREATING])
    assert waiting[1] == {
        "type": "Initialized",
        "status": "False",
        "lastProbeTime": None,
        "lastTransitionTime": T1,
        "reason": "ContainersNotInitialized",
        "message": "containers with incomplete status: [storage-init]",
    }
    done = podstatus.conditions([], T1, "Succeeded", [], [DONE])
    assert done[3] == {
        "type": "Ready",
        "status": "False",
        "lastProbeTime": None,
        "lastTransitionTime": T1,
        "reason": "PodCompleted",
    }


def test_event_as_the_kubelet_sends_it():
    assert podstatus.event(POD, "Started", "Started container notebook", T0, "18a", "notebook") == {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "nb.18a", "namespace": "ns"},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": "nb",
            "namespace": "ns",
            "uid": "u-1",
            "fieldPath": "spec.containers{notebook}",
        },
        "reason": "Started",
        "message": "Started container notebook",
        "type": "Normal",
        "source": {"component": "kubelet", "host": "node-1"},
        "reportingComponent": "kubelet",
        "reportingInstance": "node-1",
        "firstTimestamp": T0,
        "lastTimestamp": T0,
        "count": 1,
    }
    assert podstatus.event(POD, "FailedMount", "m", T0, "1", warning=True)["type"] == "Warning"


def test_logs_object_points_kwok_at_the_log_files():
    assert podstatus.logs_object(
        POD, {"notebook": ("/p/1.log", "/p/0.log"), "init": ("/p/i.log", None)}
    ) == {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Logs",
        "metadata": {
            "name": "nb",
            "namespace": "ns",
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "nb", "uid": "u-1"}],
        },
        "spec": {
            "logs": [
                {"containers": ["init"], "logsFile": "/p/i.log", "follow": True},
                {
                    "containers": ["notebook"],
                    "logsFile": "/p/1.log",
                    "follow": True,
                    "previousLogsFile": "/p/0.log",
                },
            ]
        },
    }


def test_native_sidecars_do_not_hold_initialisation():
    pod = {
        "spec": {
            "initContainers": [{"name": "init"}, {"name": "proxy", "restartPolicy": "Always"}],
            "containers": [C],
        }
    }
    proxy = {**podstatus.running({"name": "proxy", "image": "img"}, T0, True)}
    done = podstatus.terminated({"name": "init", "image": "img"}, 0, T1)
    assert podstatus.regular_init(pod, [done, proxy]) == [done]
