"""borg 1.2's JSON output (captured from borg 1.2.4) -> records."""

import json
from datetime import UTC, datetime

import pytest

from aiinfn_hub.services.backup import records
from aiinfn_hub.services.backup.records import BorgOutputError

CREATE = {
    "archive": {
        "command_line": ["/usr/bin/borg", "create", "--json"],
        "duration": 0.004713,
        "end": "2026-12-05T08:25:46.000000",
        "id": "84fc44a0",
        "name": "2026-12-05T082546Z",
        "start": "2026-12-05T08:25:45.000000",
        "stats": {
            "compressed_size": 577,
            "deduplicated_size": 100,
            "nfiles": 1,
            "original_size": 524,
        },
    },
    "cache": {
        "path": "/s/.cache/borg/2b9c",
        "stats": {"total_size": 1048, "unique_size": 524, "unique_csize": 200, "total_chunks": 4},
    },
    "encryption": {"mode": "repokey-blake2"},
    "repository": {"id": "2b9c", "last_modified": "2026-12-05T08:25:46.000000", "location": "/r"},
}
LIST = {
    "archives": [
        {"archive": "a1", "name": "2026-12-04T020000Z", "time": "2026-12-04T02:00:01.000000"},
        {"name": "2026-12-05T020000Z.checkpoint", "time": "2026-12-05T02:00:00.000000"},
        {"name": "2026-12-05T020000Z.checkpoint.1", "time": "2026-12-05T02:10:00.000000"},
        {"name": "2026-12-05T030000Z", "time": "2026-12-05T03:00:00.000000"},
    ],
    "encryption": {"mode": "repokey-blake2"},
}
INFO = {
    "cache": {
        "path": "/aiinfn/borg/.cache/borg/2b9c",
        "stats": {
            "total_chunks": 30,
            "total_csize": 4900,
            "total_size": 9000,
            "total_unique_chunks": 3,
            "unique_csize": 900,
            "unique_size": 3000,
        },
    },
    "encryption": {"mode": "repokey-blake2"},
    "repository": {"id": "2b9c", "last_modified": "2026-12-05T08:25:46.000000", "location": "/r"},
}
LINES = [
    '{"type": "d", "mode": "drwxr-xr-x", "uid": 0, "gid": 0, "path": ".", "linktarget": "",'
    ' "size": 0, "mtime": "2026-12-05T08:25:46.425157"}',
    "",
    '{"type": "l", "mode": "lrwxrwxrwx", "path": "link", "linktarget": "/etc/hostname",'
    ' "size": 13, "mtime": "2026-12-05T08:25:46.425157"}',
]


def _at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_create_stats_give_the_dedup_ratio():
    stats = records.created(json.dumps(CREATE))
    assert stats == records.ArchiveStats(
        name="2026-12-05T082546Z",
        start=_at(2026, 12, 5, 8, 25, 45),
        end=_at(2026, 12, 5, 8, 25, 46),
        files=1,
        original_size=524,
        compressed_size=577,
        deduplicated_size=100,
    )
    assert stats.dedup_ratio == 5.24


def test_an_archive_that_added_nothing_has_no_ratio():
    document = json.loads(json.dumps(CREATE))
    document["archive"]["stats"]["deduplicated_size"] = 0
    assert records.created(json.dumps(document)).dedup_ratio is None


def test_archive_info_wants_exactly_one_archive():
    one = {"archives": [CREATE["archive"]]}
    assert records.archive_info(json.dumps(one)).name == "2026-12-05T082546Z"
    with pytest.raises(BorgOutputError):
        records.archive_info(json.dumps({"archives": [CREATE["archive"]] * 2}))


def test_checkpoints_of_killed_runs_are_marked():
    found = records.archives(json.dumps(LIST))
    assert [(a.name, a.checkpoint) for a in found] == [
        ("2026-12-04T020000Z", False),
        ("2026-12-05T020000Z.checkpoint", True),
        ("2026-12-05T020000Z.checkpoint.1", True),
        ("2026-12-05T030000Z", False),
    ]
    assert found[0].time == _at(2026, 12, 4, 2, 0, 1)


def test_repository_totals():
    stats = records.repository_info(json.dumps(INFO))
    assert stats == records.RepositoryStats(
        location="/r",
        encryption="repokey-blake2",
        last_modified=_at(2026, 12, 5, 8, 25, 46),
        total_size=9000,
        unique_size=3000,
        unique_compressed_size=900,
    )
    assert stats.dedup_ratio == 10.0


def test_items_keep_symlink_targets():
    found = records.items(LINES)
    assert [(i.path, i.type, i.link_target, i.size) for i in found] == [
        (".", "d", "", 0),
        ("link", "l", "/etc/hostname", 13),
    ]
    assert found[1].mtime == datetime(2026, 12, 5, 8, 25, 46, 425157, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        "{}",
        '{"archives": {}}',
        '{"archives": [{"name": 1, "time": "2026-12-05T02:00:00"}]}',
        '{"archives": [{"name": "a", "time": "yesterday"}]}',
        '{"archives": [{"name": "a", "time": 5}]}',
    ],
)
def test_output_borg_1_2_does_not_write_is_an_error_for_the_log(text):
    with pytest.raises(BorgOutputError):
        records.archives(text)


def test_sizes_must_be_numbers_not_booleans():
    document = json.loads(json.dumps(CREATE))
    document["archive"]["stats"]["nfiles"] = True
    with pytest.raises(BorgOutputError):
        records.created(json.dumps(document))


@pytest.mark.parametrize(
    ("code", "result"),
    [
        (0, "success"),
        (1, "warning"),
        (2, "error"),
        (137, "killed"),
        (143, "killed"),
        (3, "unknown"),
        (None, "unknown"),
    ],
)
def test_only_exit_0_is_a_success(code, result):
    assert records.outcome(code) == result


def test_the_create_steps_log_an_archive_its_warnings_or_a_skip():
    text = json.dumps(CREATE, indent=4)
    totals = records.repository_info(text)  # create prints the totals as info does
    assert (totals.total_size, totals.unique_compressed_size, totals.dedup_ratio) == (
        1048,
        200,
        5.24,
    )
    assert records.create_result(text) == records.CreateResult(records.created(text), totals)
    warned = records.create_result(f"{text}\n{records.WARNINGS_MARK}\nf: changed\n")
    assert warned == records.CreateResult(records.created(text), totals, warnings="f: changed")
    skipped = records.create_result(json.dumps({"skipped": records.SKIPPED}))
    assert skipped == records.CreateResult(None, skipped=records.SKIPPED)
    with pytest.raises(records.BorgOutputError):
        records.create_result(f"{records.WARNINGS_MARK}\nf: changed\n")
    with pytest.raises(records.BorgOutputError):
        records.create_result(json.dumps({"skipped": "something else"}))


def test_a_report_log_is_cut_at_its_step_marks():
    mark = records.STEP_MARK
    text = f"stray\n{mark}prune\n{mark}info\n{{}}\n{mark}archives\n{{\n}}\n"
    assert records.step_outputs(text) == {"prune": "", "info": "{}\n", "archives": "{\n}\n"}
    assert records.step_outputs("no marks\n") == {}
