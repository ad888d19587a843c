"""The backup Job's one container (manifests.BACKUP_SCRIPT) run by sh with stand-ins for borg:
a new repository is made and not pruned; an existing one is pruned, and compacted only when
prune removed an archive; a missing folder is skipped (never made) and info gives the totals;
borg's exit 1 on create is success with its warnings; any other failure ends the container with
its code, naming the step."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from aiinfn_hub.services.backup import borg, manifests, records

ARCHIVE = {
    "name": "2026-12-05T020000Z",
    "start": "2026-12-05T02:00:00.000000",
    "end": "2026-12-05T02:00:01.000000",
    "stats": {"nfiles": 2, "original_size": 10, "compressed_size": 8, "deduplicated_size": 8},
}
CREATED = {
    "archive": ARCHIVE,
    "cache": {"stats": {"total_size": 10, "unique_size": 10, "unique_csize": 8}},
    "encryption": {"mode": "authenticated-blake2"},
    "repository": {"location": "/r", "last_modified": "2026-12-05T02:00:01.000000"},
}


def _stand_in(tmp_path: Path, name: str, code: str = "") -> borg.BorgCommand:
    """A borg run that appends its name to tmp_path/ran, then runs the shell `code`."""
    argv = ("sh", "-c", f"echo {name} >> {tmp_path / 'ran'}; {code}", "with 'quotes' $HOME *")
    return borg.BorgCommand(argv, {})


def _backup(tmp_path: Path, folder: Path, **code: str) -> subprocess.CompletedProcess[str]:
    """BACKUP_SCRIPT on tmp_path/repo and `folder`, borg's messages kept under tmp_path; every
    step a stand-in running code[step] (break-lock only when given)."""
    steps = {
        "init": "",
        "prune": "",
        "compact": "",
        "create": f"echo '{json.dumps(CREATED)}'",
        "list": """echo '{"archives": []}'""",
        "info": "echo '{}'",
    }
    steps.update({name.replace("_", "-"): value for name, value in code.items()})
    commands = {name: _stand_in(tmp_path, name, value) for name, value in steps.items()}
    step = manifests.backup_step(str(folder), str(tmp_path / "repo"), commands)
    script = step.command[2].replace(manifests.MESSAGES, str(tmp_path / "messages"))
    argv = [*step.command[:2], script, *step.command[3:]]
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def _ran(tmp_path: Path) -> list[str]:
    return (tmp_path / "ran").read_text().split()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """An existing repository and alice's folder."""
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "config").touch()
    (tmp_path / "alice").mkdir()
    return tmp_path


def test_a_new_repository_is_made_not_pruned_and_the_archive_and_list_printed(tmp_path):
    (tmp_path / "alice").mkdir()
    done = _backup(tmp_path, tmp_path / "alice")
    assert done.returncode == 0 and done.stderr == ""
    assert _ran(tmp_path) == ["init", "create", "list"]
    outputs = records.step_outputs(done.stdout)
    assert set(outputs) == {"create", "archives"}
    result = records.create_result(outputs["create"])
    assert result.archive is not None and result.archive.name == ARCHIVE["name"]
    assert result.repository is not None and result.repository.unique_compressed_size == 8
    assert outputs["archives"] == '{"archives": []}\n'


@pytest.mark.parametrize(
    ("prune", "ran"),
    [
        ("echo 'Keeping archive (rule: daily #1): a' >&2", ["prune", "create", "list"]),
        ("echo 'Pruning archive (1/1): b' >&2", ["prune", "compact", "create", "list"]),
    ],
)
def test_an_existing_repository_is_compacted_only_after_prune_removed_an_archive(repo, prune, ran):
    done = _backup(repo, repo / "alice", prune=prune)
    assert done.returncode == 0 and done.stderr == ""
    assert _ran(repo) == ran


def test_a_lock_is_broken_first_only_when_asked(repo):
    assert _backup(repo, repo / "alice", break_lock="").returncode == 0
    assert _ran(repo) == ["break-lock", "prune", "create", "list"]


def test_a_missing_folder_is_skipped_not_made_and_info_gives_the_totals(repo):
    folder = repo / "carol"
    done = _backup(repo, folder)
    assert done.returncode == 0
    assert _ran(repo) == ["prune", "list", "info"]
    outputs = records.step_outputs(done.stdout)
    assert records.create_result(outputs["create"]) == records.CreateResult(
        None, skipped=records.SKIPPED
    )
    assert outputs["info"] == "{}\n"
    assert not folder.exists()


def test_a_parent_that_cannot_be_searched_is_an_error_not_a_skip(repo):
    done = _backup(repo, repo / "nowhere" / "alice")
    assert done.returncode == 2
    assert "cannot search" in done.stderr
    assert _ran(repo) == ["prune"]


def test_a_symlink_is_refused(repo):
    (repo / "bob").symlink_to(repo / "alice")
    done = _backup(repo, repo / "bob")
    assert done.returncode == 2
    assert "symlink" in done.stderr


def test_borg_exit_1_is_success_with_its_warnings(repo):
    create = f"echo '{json.dumps(CREATED)}'; echo 'x: file changed' >&2; exit 1"
    done = _backup(repo, repo / "alice", create=create)
    assert done.returncode == 0
    result = records.create_result(records.step_outputs(done.stdout)["create"])
    assert result.archive is not None and result.warnings == "x: file changed"
    assert _ran(repo) == ["prune", "create", "list"]


@pytest.mark.parametrize(("step", "code"), [("create", 2), ("create", 137), ("prune", 2)])
def test_a_failing_step_ends_the_backup_with_its_code_and_borgs_messages(repo, step, code):
    done = _backup(repo, repo / "alice", **{step: f"echo 'lock timeout' >&2; exit {code}"})
    assert done.returncode == code
    assert f"backup: step {step} exited {code}\nlock timeout\n" in done.stderr
    assert manifests.failed_borg_step(done.stdout + done.stderr) == step
    assert _ran(repo)[-1] == step  # nothing after it


def test_argvs_are_run_as_given(repo):
    """Each stand-in's last argument ($0 of its sh) holds quotes, a $ and a *: unexpanded."""
    done = _backup(repo, repo / "alice", list="""printf '%s\\n' "$0" """)
    assert records.step_outputs(done.stdout)["archives"] == "with 'quotes' $HOME *\n"
