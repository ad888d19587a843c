"""The backup Job's shell steps run by sh with stand-ins for borg. Create (CREATE_SCRIPT): a
missing folder is skipped (never made), borg's exit 1 is success with its warnings printed after
the JSON, anything else fails. Prepare (PREPARE_SCRIPT): a new repository is only made; an
existing one is pruned, and compacted only when prune removed an archive. Report
(REPORT_SCRIPT): each step's output after its mark; info only after a skip."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from aiinfn_hub.services.backup import manifests, records

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


def _local(script: str, tmp_path: Path) -> str:
    """A step's script with its skip mark and borg's messages under tmp_path, not /tmp."""
    script = script.replace(manifests.SKIP_MARK, str(tmp_path / "skip"))
    return script.replace(manifests.MESSAGES, str(tmp_path / "messages"))


def _run(tmp_path: Path, folder: Path, code: int) -> subprocess.CompletedProcess:
    """CREATE_SCRIPT with its skip mark under tmp_path; `borg` prints the JSON, a message on
    stderr and exits `code`."""
    script = _local(manifests.CREATE_SCRIPT, tmp_path)
    fake = f"echo '{json.dumps(CREATED)}'; echo 'x: file changed' >&2; exit {code}"
    argv = ["sh", "-c", script, "create", str(folder), "sh", "-c", fake]
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def test_a_missing_folder_is_skipped_and_not_made(tmp_path):
    folder = tmp_path / "root" / "alice"
    folder.parent.mkdir()
    done = _run(tmp_path, folder, 0)
    assert done.returncode == 0
    assert records.create_result(done.stdout) == records.CreateResult(None, skipped=records.SKIPPED)
    assert not folder.exists()
    assert (tmp_path / "skip").exists()


def test_a_parent_that_cannot_be_searched_is_an_error_not_a_skip(tmp_path):
    done = _run(tmp_path, tmp_path / "nowhere" / "alice", 0)
    assert done.returncode == 2
    assert "cannot search" in done.stderr
    assert not (tmp_path / "skip").exists()


def test_a_symlink_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "alice").symlink_to(tmp_path / "elsewhere")
    done = _run(tmp_path, tmp_path / "alice", 0)
    assert done.returncode == 2
    assert "symlink" in done.stderr


@pytest.mark.parametrize("code", [0, 1])
def test_borg_exit_1_is_success_with_its_warnings(tmp_path, code):
    (tmp_path / "alice").mkdir()
    done = _run(tmp_path, tmp_path / "alice", code)
    assert done.returncode == 0
    result = records.create_result(done.stdout)
    assert result.archive is not None and result.archive.name == ARCHIVE["name"]
    assert result.repository is not None and result.repository.unique_compressed_size == 8
    assert result.warnings == ("x: file changed" if code else "")


@pytest.mark.parametrize("code", [2, 137])
def test_other_codes_fail_with_borgs_messages(tmp_path, code):
    (tmp_path / "alice").mkdir()
    done = _run(tmp_path, tmp_path / "alice", code)
    assert done.returncode == code
    assert "x: file changed" in done.stderr


def _report(tmp_path: Path, *steps: tuple[str, str, list[str]]) -> subprocess.CompletedProcess:
    """REPORT_SCRIPT with its skip mark under tmp_path, each step (name, when, argv)."""
    script = _local(manifests.REPORT_SCRIPT, tmp_path)
    argv = ["sh", "-c", script, "report"]
    for name, when, command in steps:
        argv += [name, when, str(len(command)), *command]
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def test_the_report_step_prints_each_output_after_its_mark_argv_as_given(tmp_path):
    steps = (
        ("echo", "always", ["printf", "%s|%s|%s\\n", "a b", "$HOME;x", "*"]),
        ("info", "if-skipped", ["sh", "-c", "exit 7"]),
        ("archives", "always", ["sh", "-c", "echo '{}'; echo noise >&2"]),
    )
    done = _report(tmp_path, *steps)
    assert done.returncode == 0 and done.stderr == ""
    assert records.step_outputs(done.stdout) == {"echo": "a b|$HOME;x|*\n", "archives": "{}\n"}


def test_after_a_skip_info_runs_too(tmp_path):
    (tmp_path / "skip").touch()
    done = _report(
        tmp_path,
        ("archives", "always", ["echo", '{"archives": []}']),
        ("info", "if-skipped", ["echo", "{}"]),
    )
    assert done.returncode == 0
    assert records.step_outputs(done.stdout) == {"archives": '{"archives": []}\n', "info": "{}\n"}


def test_the_first_failing_step_ends_the_report_with_its_code_and_messages(tmp_path):
    done = _report(
        tmp_path,
        ("archives", "always", ["sh", "-c", "echo 'lock timeout' >&2; exit 2"]),
        ("other", "always", ["echo", "{}"]),
    )
    assert done.returncode == 2
    assert done.stderr == "backup: step archives exited 2\nlock timeout\n"
    assert records.step_outputs(done.stdout) == {"archives": ""}


def _prepare(tmp_path: Path, prune: str) -> subprocess.CompletedProcess:
    """PREPARE_SCRIPT on tmp_path/repo: each stand-in appends its name to tmp_path/ran; prune
    runs the shell code `prune` after that."""
    ran = tmp_path / "ran"
    commands = [
        ["sh", "-c", f"echo init >> {ran}"],
        ["sh", "-c", f"echo prune >> {ran}; {prune}"],
        ["sh", "-c", f"echo compact >> {ran}", "with 'quotes' and $HOME"],
    ]
    argv = [
        "sh",
        "-c",
        _local(manifests.PREPARE_SCRIPT, tmp_path),
        "prepare",
        str(tmp_path / "repo"),
    ]
    for command in commands:
        argv += [str(len(command)), *command]
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def _ran(tmp_path: Path) -> list[str]:
    return (tmp_path / "ran").read_text().split()


def test_a_new_repository_is_only_made(tmp_path):
    assert _prepare(tmp_path, "exit 9").returncode == 0
    assert _ran(tmp_path) == ["init"]


@pytest.mark.parametrize(
    ("prune", "ran"),
    [
        ("echo 'Keeping archive (rule: daily #1): a' >&2", ["prune"]),
        ("echo 'Pruning archive (1/1): b' >&2", ["prune", "compact"]),
    ],
)
def test_an_existing_repository_is_compacted_only_after_prune_removed_an_archive(
    tmp_path, prune, ran
):
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "config").touch()
    done = _prepare(tmp_path, prune)
    assert done.returncode == 0 and done.stderr == ""
    assert _ran(tmp_path) == ran


def test_a_failing_prune_ends_the_step_with_its_code_and_messages(tmp_path):
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "config").touch()
    done = _prepare(
        tmp_path, "echo 'Pruning archive (1/1): b' >&2; echo 'lock timeout' >&2; exit 2"
    )
    assert done.returncode == 2
    assert "backup: step prune exited 2" in done.stderr and "lock timeout" in done.stderr
    assert _ran(tmp_path) == ["prune"]
