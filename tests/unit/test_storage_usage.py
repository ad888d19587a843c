"""The storage walker (storage_usage) and the exporter's collector on generated trees: bytes and
files counted once per inode, symbolic links never followed, unreadable directories counted as
errors, the budget's pacing, and scrapes that only read what the walker published."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from aiinfn_hub import names, storage_exporter, storage_usage
from aiinfn_hub.storage_usage import Budget, Folder, Usage, WalkStopped

REPO = Path(__file__).resolve().parents[2]


def unlimited() -> Budget:
    return Budget(0, lambda seconds: False)


def write(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return path


def test_a_tree_is_counted_like_du(tmp_path):
    write(tmp_path / "a", 100)
    write(tmp_path / "sub" / "b", 20)
    write(tmp_path / "sub" / "deeper" / "c", 3)
    (tmp_path / "empty").mkdir()
    usage = storage_usage.walk(tmp_path, unlimited())
    assert (usage.bytes, usage.files, usage.directories, usage.errors) == (123, 3, 3, 0)
    blocks = sum(os.lstat(p).st_blocks * 512 for p in tmp_path.rglob("*") if p.is_file())
    assert usage.allocated_bytes == blocks


def test_symbolic_links_are_entries_never_followed(tmp_path):
    outside = tmp_path / "outside"
    write(outside / "big", 10_000)
    home = tmp_path / "home"
    write(home / "mine", 7)
    (home / "to-dir").symlink_to(outside)
    (home / "to-file").symlink_to(outside / "big")
    (home / "loop").symlink_to(home)
    (home / "dangling").symlink_to(tmp_path / "nowhere")
    usage = storage_usage.walk(home, unlimited())
    assert (usage.bytes, usage.files, usage.directories, usage.errors) == (7, 5, 0, 0)


def test_hard_links_count_once_per_folder(tmp_path):
    first = write(tmp_path / "alice" / "data", 1000)
    os.link(first, tmp_path / "alice" / "again")
    (tmp_path / "alice" / "sub").mkdir()
    os.link(first, tmp_path / "alice" / "sub" / "third")
    (tmp_path / "bob").mkdir()
    os.link(first, tmp_path / "bob" / "shared")
    alice = storage_usage.walk(tmp_path / "alice", unlimited())
    bob = storage_usage.walk(tmp_path / "bob", unlimited())
    assert (alice.bytes, alice.files) == (1000, 1)
    assert (bob.bytes, bob.files) == (1000, 1)  # each folder holds it once


WALK_AS_NOBODY = """
import dataclasses, json, sys
from pathlib import Path
from aiinfn_hub import storage_usage
usage = storage_usage.walk(Path(sys.argv[1]), storage_usage.Budget(0, lambda s: False))
print(json.dumps(dataclasses.asdict(usage)))
"""


def walk_unprivileged(folder: Path) -> Usage:
    """walk() as a uid that permissions apply to: nobody through setpriv when we are root."""
    if os.geteuid() != 0:
        return storage_usage.walk(folder, unlimited())
    command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    result = subprocess.run(
        [*command, sys.executable, "-c", WALK_AS_NOBODY, str(folder)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return Usage(**json.loads(result.stdout))


@pytest.fixture
def world_readable():
    """A folder nobody can reach (pytest's tmp_path is under a 0700 folder)."""
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o755)
        yield Path(folder)


def test_unreadable_folders_are_errors_not_crashes(world_readable):
    home = world_readable
    write(home / "readable" / "a", 10)
    write(home / "locked" / "hidden", 500)
    write(home / "locked" / "deeper" / "more", 500)
    write(home / "b", 5)
    (home / "locked").chmod(0o000)
    try:
        usage = walk_unprivileged(home)
    finally:
        (home / "locked").chmod(0o755)
    assert (usage.bytes, usage.files, usage.directories, usage.errors) == (15, 2, 2, 1)


def test_a_vanished_folder_is_an_error_of_the_walk_not_of_the_exporter(tmp_path):
    with pytest.raises(FileNotFoundError):
        storage_usage.walk(tmp_path / "gone", unlimited())


def test_folders_are_the_slugs_of_users_and_projects(tmp_path):
    homes, projects = tmp_path / "home", tmp_path / "projects"
    for name in ("alice", "-41lice", "a-2elice", "lost+found", ".hidden", "a-zz"):
        (homes / name).mkdir(parents=True)
    (homes / ".aiinfn-uid-100000").symlink_to("owner:alice")
    (homes / "stray-file").write_text("")
    (projects / "cms-2dml").mkdir(parents=True)
    found = storage_usage.folders({"home": homes, "project": projects})
    assert found == [
        Folder("home", "Alice", homes / "-41lice"),
        Folder("home", "a.lice", homes / "a-2elice"),
        Folder("home", "alice", homes / "alice"),
        Folder("project", "cms-ml", projects / "cms-2dml"),
    ]


@pytest.mark.parametrize(
    "name", ["alice", "Alice", "a.lice", "a_lice", "b@x.org", "cms-ml", "ab-c.d_e", "x+1"]
)
def test_folder_names_decode_the_hubs_slugs(name):
    assert storage_usage.folder_name(names.slug(name)) == name


@pytest.mark.parametrize("folder", ["lost+found", ".hidden", "a-zz", "A", "-4", ""])
def test_folders_the_hub_did_not_name_have_no_name(folder):
    assert storage_usage.folder_name(folder) is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += seconds
        return False


def test_the_budget_paces_entries_to_its_rate():
    clock = FakeClock()
    budget = Budget(1000, clock.wait, clock, slice_=100)
    for _ in range(1000):
        budget.spend()
    assert clock.waits == pytest.approx([0.1] * 10)
    assert clock.now == pytest.approx(1.0)
    clock.now += 60  # idle: no burst earned
    budget.restart()
    for _ in range(100):
        budget.spend()
    assert clock.waits[-1] == pytest.approx(0.1)
    assert budget.total == 1100


def test_a_slow_disk_is_not_slowed_further_and_a_stop_ends_the_walk(tmp_path):
    clock = FakeClock()
    budget = Budget(1000, clock.wait, clock, slice_=100)
    clock.now = 5.0  # the entries took longer than the rate allows already
    for _ in range(100):
        budget.spend()
    assert clock.waits == [0.0]
    for index in range(300):
        write(tmp_path / f"f{index}", 1)
    with pytest.raises(WalkStopped):
        storage_usage.walk(tmp_path, Budget(0, lambda seconds: True, slice_=100))


def samples(walker: storage_exporter.Walker) -> dict[tuple[str, tuple], float]:
    registry = CollectorRegistry()
    registry.register(storage_exporter.StorageCollector(walker))
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
    }


def test_a_scrape_reads_what_the_last_pass_published(tmp_path):
    homes, projects = tmp_path / "home", tmp_path / "projects"
    write(homes / "alice" / "notebook.ipynb", 300)
    write(projects / "cms-2dml" / "data", 4)
    walker = storage_exporter.Walker({"home": homes, "project": projects}, 0, 60)
    assert [name for name, _ in samples(walker)] == [
        "aiinfn_storage_walker_entries_total",
        "aiinfn_storage_walker_passes_total",
        "aiinfn_storage_walker_rate_limit",
    ]  # before the first walk: no folder series, no zeros
    walker.one_pass()
    alice = (("kind", "home"), ("name", "alice"))
    first = samples(walker)
    assert first["aiinfn_storage_bytes", alice] == 300
    assert first["aiinfn_storage_files", (("kind", "project"), ("name", "cms-ml"))] == 1
    assert first["aiinfn_storage_walker_passes_total", ()] == 1
    assert first["aiinfn_storage_walker_last_pass_duration_seconds", ()] >= 0
    assert first["aiinfn_storage_walk_timestamp_seconds", alice] > 0
    write(homes / "alice" / "more", 700)
    assert samples(walker)["aiinfn_storage_bytes", alice] == 300  # a scrape walks nothing
    (projects / "cms-2dml" / "data").unlink()
    (projects / "cms-2dml").rmdir()
    walker.one_pass()
    second = samples(walker)
    assert second["aiinfn_storage_bytes", alice] == 1000
    assert not [key for key in second if ("name", "cms-ml") in key[1]]  # gone with its folder
    assert second["aiinfn_storage_walker_entries_total", ()] == 2 + 2


def test_the_usage_fields_are_the_exported_families():
    assert [f for f in Usage.__dataclass_fields__] == list(storage_exporter._USAGE_HELP)


def test_the_command_needs_a_root_and_a_sane_budget():
    with pytest.raises(SystemExit):
        storage_exporter.parse_args([])
    with pytest.raises(SystemExit):
        storage_exporter.parse_args(["--homes", "/x", "--rate", "-1"])
    args = storage_exporter.parse_args(["--projects", "/p"])
    assert (args.homes, args.projects, args.address, args.rate) == (
        None,
        Path("/p"),
        "127.0.0.1",
        5000,
    )
