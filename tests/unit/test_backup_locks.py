"""The stale-lock rule: break borg's lock only when every holder is one of our pods, gone."""

import json

import pytest

from aiinfn_hub.services.backup import locks
from aiinfn_hub.services.backup.locks import Holder, LockState

POD1 = "aiinfn-backup-pod:backup-home-1c7ad76b44f8-r1-x7k2p"


def test_lock_file_names_are_host_dot_pid_dash_thread():
    assert locks.parse_exclusive(f"{POD1}.7-0") == Holder(POD1, 7, 0)
    assert locks.parse_exclusive("node.example.org@1234.42-1f") == Holder(
        "node.example.org@1234", 42, 31
    )
    assert locks.parse_exclusive(f"{POD1}.7-0").pod == "backup-home-1c7ad76b44f8-r1-x7k2p"
    assert Holder("laptop@1234", 1, 0).pod is None
    assert Holder(locks.HOST_PREFIX, 1, 0).pod is None


@pytest.mark.parametrize("name", ["", "x", "host-0", "host.pid-0", "host.7-zz", ".7-0", "h.7-"])
def test_names_not_in_borgs_form_are_not_read_as_holders(name):
    assert locks.parse_exclusive(name) is None


def test_the_roster_lists_shared_and_exclusive_holders():
    text = json.dumps({"shared": [[POD1, 7, 0]], "exclusive": [["laptop@1", 9, 0]]})
    assert locks.parse_roster(text) == ([Holder(POD1, 7, 0), Holder("laptop@1", 9, 0)], [])
    holders, unreadable = locks.parse_roster(json.dumps({"exclusive": [[POD1, "7", 0]]}))
    assert holders == [] and unreadable == ["lock.roster exclusive: ['" + POD1 + "', '7', 0]"]
    assert locks.parse_roster("{") == ([], ["lock.roster is not JSON"])
    assert locks.parse_roster("[]") == ([], ["lock.roster is not a JSON object"])


def test_lock_state_merges_both_files_without_repeating_a_holder():
    roster = json.dumps({"exclusive": [[POD1, 7, 0]]})
    assert locks.lock_state([f"{POD1}.7-0"], roster) == LockState(True, (Holder(POD1, 7, 0),))
    assert locks.lock_state(None, None) == LockState(False)
    assert locks.lock_state([], None) == LockState(True)
    bad = locks.lock_state(["garbage"], None)
    assert bad.unreadable == ("lock.exclusive: 'garbage'",)


def test_read_finds_the_lock_of_a_repository_and_of_its_caches(tmp_path):
    repository = tmp_path / "alice"
    (repository / "lock.exclusive").mkdir(parents=True)
    (repository / "lock.exclusive" / f"{POD1}.7-0").touch()
    (repository / "lock.roster").write_text(json.dumps({"exclusive": [[POD1, 7, 0]]}))
    assert locks.read(repository) == LockState(True, (Holder(POD1, 7, 0),))
    assert locks.read(tmp_path / "missing") == LockState(False)
    cache = tmp_path / "state" / ".cache" / "borg" / "2b9c"
    (cache / "lock.exclusive").mkdir(parents=True)
    (cache / "lock.exclusive" / "laptop@1.9-0").touch()
    state = locks.merge(locks.read(repository), locks.read_caches(tmp_path / "state"))
    assert state.holders == (Holder(POD1, 7, 0), Holder("laptop@1", 9, 0))
    assert locks.read_caches(tmp_path / "nothing") == LockState(False)


def _pod(name, phase):
    return {"metadata": {"name": name}, "status": {"phase": phase} if phase else {}}


def test_live_pods_are_those_that_may_still_run():
    pods = [
        _pod("a", "Running"),
        _pod("b", "Pending"),
        _pod("c", "Unknown"),
        _pod("d", None),
        _pod("e", "Succeeded"),
        _pod("f", "Failed"),
    ]
    assert locks.live_pods(pods) == {"a", "b", "c", "d"}


HELD = LockState(True, (Holder(POD1, 7, 0),))
POD1_NAME = "backup-home-1c7ad76b44f8-r1-x7k2p"


@pytest.mark.parametrize(
    ("state", "live", "verdict", "reason"),
    [
        (LockState(False), set(), False, "the repository is not locked"),
        (HELD, set(), True, f"held by pod {POD1_NAME}, which no longer runs"),
        (HELD, {"other"}, True, f"held by pod {POD1_NAME}, which no longer runs"),
        (HELD, {POD1_NAME}, False, f"held by pod {POD1_NAME}, which is still live"),
        (
            LockState(True, (Holder(POD1, 7, 0), Holder("laptop@1", 9, 0))),
            set(),
            False,
            "held by 'laptop@1', not a backup pod; kept for an admin",
        ),
        (
            LockState(True, (Holder(POD1, 7, 0),), ("lock.exclusive: 'x'",)),
            set(),
            False,
            "a lock entry cannot be read (lock.exclusive: 'x'); kept",
        ),
        (LockState(True), set(), True, "a lock folder without holders is left"),
    ],
)
def test_a_lock_is_broken_only_when_its_holder_is_provably_gone(state, live, verdict, reason):
    decision = locks.decide(state, live)
    assert decision.break_lock is verdict
    assert decision.reason.startswith(reason)


def test_one_live_holder_among_dead_ones_keeps_the_lock():
    other = "aiinfn-backup-pod:backup-home-1c7ad76b44f8-r2-aaaaa"
    state = LockState(True, (Holder(POD1, 7, 0), Holder(other, 8, 0)))
    assert not locks.decide(state, {"backup-home-1c7ad76b44f8-r2-aaaaa"}).break_lock
    assert locks.decide(state, set()).break_lock


def test_the_host_id_names_the_pod():
    assert locks.host_id("p-1") == "aiinfn-backup-pod:p-1"
    assert locks.parse_exclusive(f"{locks.host_id('a.b-c')}.3-0") == Holder(
        "aiinfn-backup-pod:a.b-c", 3, 0
    )


def test_a_lock_probe_log_merges_the_repository_and_its_caches():
    pod = "aiinfn-backup-pod:backup-home-1c7ad76b44f8-r1"
    probe = "\n".join(
        [
            "lock",
            "exclusive-folder",
            f"exclusive {pod}.12-1a",
            "roster-file",
            f'roster {{"exclusive": [["{pod}", 12, 26]]}}',
            "lock",
            "exclusive-folder",
            f"exclusive {pod}.12-1a",
        ]
    )
    state = locks.parse_probe(probe)
    assert state == locks.LockState(True, (locks.Holder(pod, 12, 26),))
    assert locks.decide(state, set()).break_lock
    assert not locks.decide(state, {"backup-home-1c7ad76b44f8-r1"}).break_lock
    assert locks.parse_probe("") == locks.LockState(False)


def test_a_lock_probe_line_we_do_not_know_keeps_the_lock():
    state = locks.parse_probe("lock\nexclusive-folder\nsomething else\n")
    assert state.present and state.unreadable
    assert not locks.decide(state, set()).break_lock
    assert locks.parse_probe("stray").unreadable
