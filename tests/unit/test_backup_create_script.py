"""The backup Job's create step (manifests.CREATE_SCRIPT) run by sh with a stand-in for borg:
a missing folder is skipped (never made), borg's exit 1 is success with its warnings printed
after the JSON, anything else fails."""

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


def _run(tmp_path: Path, folder: Path, code: int) -> subprocess.CompletedProcess:
    """CREATE_SCRIPT with its skip mark under tmp_path; `borg` prints the JSON, a message on
    stderr and exits `code`."""
    mark = tmp_path / "skip"
    script = manifests.CREATE_SCRIPT.replace(manifests.SKIP_MARK, str(mark))
    fake = f"echo '{json.dumps({'archive': ARCHIVE})}'; echo 'x: file changed' >&2; exit {code}"
    argv = ["sh", "-c", script, "create", str(folder), "sh", "-c", fake]
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def test_a_missing_folder_is_skipped_and_not_made(tmp_path):
    folder = tmp_path / "root" / "alice"
    folder.parent.mkdir()
    done = _run(tmp_path, folder, 0)
    assert done.returncode == 0
    assert records.create_result(done.stdout) == records.CreateResult(None, records.SKIPPED)
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
    assert result.warnings == ("x: file changed" if code else "")


@pytest.mark.parametrize("code", [2, 137])
def test_other_codes_fail_with_borgs_messages(tmp_path, code):
    (tmp_path / "alice").mkdir()
    done = _run(tmp_path, tmp_path / "alice", code)
    assert done.returncode == code
    assert "x: file changed" in done.stderr


def _report(tmp_path: Path, *steps: tuple[str, str, list[str]]) -> subprocess.CompletedProcess:
    """REPORT_SCRIPT with its skip mark under tmp_path, each step (name, when, argv)."""
    script = manifests.REPORT_SCRIPT.replace(manifests.SKIP_MARK, str(tmp_path / "skip"))
    argv = ["sh", "-c", script, "report"]
    for name, when, command in steps:
        argv += [name, when, str(len(command)), *command]
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def test_the_report_step_prints_each_output_after_its_mark_argv_as_given(tmp_path):
    steps = (
        ("prune", "unless-skipped", ["printf", "%s|%s|%s\\n", "a b", "$HOME;x", "*"]),
        ("info", "always", ["sh", "-c", "echo '{}'; echo noise >&2"]),
        ("archives", "always", ["echo", '{"archives": []}']),
    )
    done = _report(tmp_path, *steps)
    assert done.returncode == 0 and done.stderr == ""
    assert records.step_outputs(done.stdout) == {
        "prune": "a b|$HOME;x|*\n",
        "info": "{}\n",
        "archives": '{"archives": []}\n',
    }


def test_after_a_skip_prune_and_compact_do_nothing_and_the_report_still_runs(tmp_path):
    (tmp_path / "skip").touch()
    done = _report(
        tmp_path,
        ("prune", "unless-skipped", ["sh", "-c", "exit 7"]),
        ("compact", "unless-skipped", ["sh", "-c", "exit 7"]),
        ("info", "always", ["echo", "{}"]),
    )
    assert done.returncode == 0
    assert records.step_outputs(done.stdout) == {"info": "{}\n"}


def test_the_first_failing_step_ends_the_report_with_its_code_and_messages(tmp_path):
    done = _report(
        tmp_path,
        ("prune", "unless-skipped", ["sh", "-c", "echo 'lock timeout' >&2; exit 2"]),
        ("info", "always", ["echo", "{}"]),
    )
    assert done.returncode == 2
    assert done.stderr == "backup: step prune exited 2\nlock timeout\n"
    assert records.step_outputs(done.stdout) == {"prune": ""}
