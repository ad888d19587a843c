"""When a notebook pod's start is hopeless, and the log excerpt the user sees (podfailure)."""

from __future__ import annotations

import pytest

from aiinfn_hub import podfailure
from aiinfn_hub.podfailure import REDACTED, Crash

FAILED = {
    "exitCode": 3,
    "reason": "Error",
    "startedAt": "2026-12-04T21:00:00Z",
    "finishedAt": "2026-12-04T21:00:01Z",
}
NOTEBOOK_FAILED = Crash("notebook", False, 3, "Error", "", 3)


def pod(phase="Running", init=(), main=()):
    status = {"phase": phase, "containerStatuses": list(main)}
    if init:
        status["initContainerStatuses"] = list(init)
    return {"metadata": {"name": "jupyter-alice"}, "status": status}


def waiting(name, restarts, reason="CrashLoopBackOff", last=FAILED):
    status = {"name": name, "restartCount": restarts, "state": {"waiting": {"reason": reason}}}
    if last:
        status["lastState"] = {"terminated": dict(last)}
    return status


def running(name, restarts=0):
    return {
        "name": name,
        "restartCount": restarts,
        "state": {"running": {"startedAt": "x"}},
        "lastState": {"terminated": dict(FAILED)} if restarts else {},
    }


def terminated(name, code, restarts=0, reason="Error", message=None):
    state = {"exitCode": code, "reason": reason}
    if message:
        state["message"] = message
    return {"name": name, "restartCount": restarts, "state": {"terminated": state}}


@pytest.mark.parametrize(
    "the_pod, limit, expected",
    [
        # Starting, running, or in its first back-offs: there is still hope.
        (pod("Pending", main=[waiting("notebook", 0, "ContainerCreating", last=None)]), 3, None),
        (pod(main=[running("notebook", 2)]), 3, None),
        (pod(main=[waiting("notebook", 2)]), 3, None),
        # Failed again after the third restart (restartCount counts restarts made).
        (pod(main=[waiting("notebook", 3)]), 3, NOTEBOOK_FAILED),
        (pod(main=[terminated("notebook", 3, restarts=3)]), 3, NOTEBOOK_FAILED),
        # crash_restarts 0: the first failure ends the spawn.
        (pod(main=[waiting("notebook", 0)]), 0, Crash("notebook", False, 3, "Error", "", 0)),
        # A pod that has ended (restartPolicy OnFailure and exit 0, or Never) will not run again.
        (
            pod("Succeeded", main=[terminated("notebook", 0, reason="Completed")]),
            3,
            Crash("notebook", False, 0, "Completed", "", 0),
        ),
        (
            pod("Failed", main=[terminated("notebook", 127)]),
            3,
            Crash("notebook", False, 127, "Error", "", 0),
        ),
        # Init containers come first; one that completed is fine, one that crash-loops is not.
        (
            pod(
                "Pending",
                init=[terminated("storage", 0, reason="Completed"), waiting("setup", 1)],
                main=[waiting("notebook", 0, "PodInitializing", last=None)],
            ),
            1,
            Crash("setup", True, 3, "Error", "", 1),
        ),
        (
            pod(
                "Pending",
                init=[waiting("storage", 0)],
                main=[waiting("notebook", 0, "PodInitializing", last=None)],
            ),
            1,
            None,
        ),
        # The runtime could not start the process: its message is kept.
        (
            pod(
                main=[
                    terminated(
                        "notebook",
                        128,
                        restarts=1,
                        reason="StartError",
                        message="exec: no such file",
                    )
                ]
            ),
            1,
            Crash("notebook", False, 128, "StartError", "exec: no such file", 1),
        ),
    ],
)
def test_crashed_decides_when_a_start_is_hopeless(the_pod, limit, expected):
    assert podfailure.crashed(the_pod, limit) == expected


def test_crashed_on_a_pod_without_status():
    assert podfailure.crashed({"metadata": {}}, 0) is None


def test_secret_values_are_every_long_string_held_longest_first():
    auth_state = {
        "access_token": "a" * 40,
        "refresh_token": "r" * 50,
        "nested": {"id_token": ["i" * 9]},
        "expires_at": 1234567890,
        "scope": "short",
    }
    assert podfailure.secret_values("t" * 32, auth_state, None) == [
        "r" * 50,
        "a" * 40,
        "t" * 32,
        "i" * 9,
    ]


@pytest.mark.parametrize(
    "line, expected",
    [
        ("token held: HELDSECRETVALUE!", f"token held: {REDACTED}!"),
        ("Authorization: token abc123", f"Authorization: token {REDACTED}"),
        ("Authorization: Bearer abc123", f"Authorization: Bearer {REDACTED}"),
        ("GET /api?token=abc&x=1", f"GET /api?token={REDACTED}&x=1"),
        ('{"client_secret": "s3cr3t"}', f'{{"client_secret": "{REDACTED}"}}'),
        ("PASSWORD=hunter2 next", f"PASSWORD={REDACTED} next"),
        ("jwt eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl end", f"jwt {REDACTED} end"),
        ("api 0123456789abcdef0123456789abcdef here", f"api {REDACTED} here"),
        # Ordinary text stays: paths, words, short numbers, long words without digits.
        (
            "PermissionError: [Errno 13] Permission denied: '/home/jovyan/.local'",
            "PermissionError: [Errno 13] Permission denied: '/home/jovyan/.local'",
        ),
        (
            "no_tokens_here_just_a_very_long_identifier_name",
            "no_tokens_here_just_a_very_long_identifier_name",
        ),
    ],
)
def test_redact_masks_what_we_hold_and_what_looks_like_a_credential(line, expected):
    assert podfailure.redact(line, ["HELDSECRETVALUE"]) == expected


def test_log_excerpt_keeps_the_last_lines_within_bounds():
    log = "".join(f"line {i}\n" for i in range(100))
    assert podfailure.log_excerpt(log, [], 3, 4096) == "line 97\nline 98\nline 99"
    assert podfailure.log_excerpt(log, [], 50, 16) == "line 98\nline 99"
    assert podfailure.log_excerpt(log, [], 0, 4096) == ""


def test_log_excerpt_cleans_lines():
    log = "\x1b[31mred\x1b[0m\r\nbell\x07 tab\tok\n" + "x" * 400 + "\n\n\n"
    lines = podfailure.log_excerpt(log, [], 10, 4096).split("\n")
    assert lines[:2] == ["red", "bell tab\tok"]
    assert len(lines[2]) == podfailure.MAX_LINE_CHARS and lines[2].endswith("…")
    assert len(lines) == 3


def test_log_excerpt_masks_secrets_split_nowhere():
    secret = "S" * 20 + "1"
    excerpt = podfailure.log_excerpt(f"start\nusing {secret}\n", [secret], 5, 4096)
    assert excerpt == f"start\nusing {REDACTED}"


START = "your server could not start: "


@pytest.mark.parametrize(
    "crash, excerpt, show, expected",
    [
        (
            NOTEBOOK_FAILED,
            "Traceback\nImportError: x",
            True,
            "container 'notebook' failed again after 3 restarts (exit code 3); "
            "its last log lines:\nTraceback\nImportError: x",
        ),
        (
            Crash("storage", True, 1, "Error", "", 1),
            "",
            True,
            "set-up container 'storage' failed again after 1 restart (exit code 1); "
            "it wrote no log",
        ),
        (
            Crash("notebook", False, 0, "Completed", "", 0),
            None,
            True,
            "container 'notebook' exited (exit code 0); its log could not be read",
        ),
        (
            Crash("notebook", False, 128, "StartError", "exec: token=abc", 0),
            None,
            False,
            f"container 'notebook' failed (exit code 128; StartError; exec: token={REDACTED})",
        ),
        # The message the kubelet took from the log is not repeated next to the log.
        (
            Crash("storage-init", True, 1, "Error", "refusing /home/x:\nowned by 0\n", 0),
            "start\nrefusing /home/x:\nowned by 0",
            True,
            "set-up container 'storage-init' failed (exit code 1); "
            "its last log lines:\nstart\nrefusing /home/x:\nowned by 0",
        ),
    ],
)
def test_user_message(crash, excerpt, show, expected):
    assert podfailure.user_message(crash, excerpt, [], show_log=show) == START + expected
