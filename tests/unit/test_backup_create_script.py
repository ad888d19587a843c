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


def test_prune_and_compact_do_nothing_after_a_skip(tmp_path):
    mark = tmp_path / "skip"
    script = manifests.UNLESS_SKIPPED_SCRIPT.replace(manifests.SKIP_MARK, str(mark))
    ran = subprocess.run(["sh", "-c", script, "prune", "sh", "-c", "exit 7"], check=False)
    assert ran.returncode == 7
    mark.touch()
    ran = subprocess.run(["sh", "-c", script, "prune", "sh", "-c", "exit 7"], check=False)
    assert ran.returncode == 0
