"""The scheduler's pure decisions: due or not, concurrency, and never a success on failure."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from aiinfn_hub.services.backup import records, schedule
from aiinfn_hub.services.backup.schedule import Policy, Record, Run

POLICY = Policy(daily_at="02:00", concurrency=2, retries=1, retry_delay=timedelta(hours=1))
DAY = datetime(2026, 12, 5, tzinfo=UTC)
SINCE = DAY - timedelta(days=7)  # the scheduler started a week earlier


def at(hour: int, minute: int = 0, day: int = 0) -> datetime:
    return DAY + timedelta(days=day, hours=hour, minutes=minute)


def report(original: int = 1000, added: int = 100) -> schedule.Report:
    created = records.ArchiveStats("a", at(2), at(2, 1), 3, original, 600, added)
    repository = records.RepositoryStats("/r", "repokey-blake2", at(2, 1), 4000, 900, 500)
    return schedule.Report(created, repository, archives=2)


def run(state: str, started: datetime, kind: str = "backup", key: str = "home-alice") -> Run:
    return Run(f"{kind}-{key}", key, kind, started, state)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["2:00", "24:00", "12:60", "", "02:00 ", "0200"])
def test_a_daily_time_is_hh_mm(text: str):
    with pytest.raises(ValueError):
        schedule.parse_daily(text)
    with pytest.raises(ValueError):
        Policy(daily_at=text)


def test_the_period_starts_at_the_last_scheduled_time():
    assert schedule.period_start(POLICY, at(2)) == at(2)
    assert schedule.period_start(POLICY, at(13, 5)) == at(2)
    assert schedule.period_start(POLICY, at(1, 59)) == at(2, day=-1)


def test_a_repository_never_backed_up_is_due():
    assert schedule.backup_due(POLICY, Record("home-alice"), at(3))


def test_a_backup_is_due_once_per_period():
    done = schedule.finished(POLICY, Record("home-alice"), run("succeeded", at(2)), report())
    assert not schedule.backup_due(POLICY, done, at(23))
    assert not schedule.backup_due(POLICY, done, at(1, 59, day=1))
    assert schedule.backup_due(POLICY, done, at(2, day=1))


def test_a_failure_is_retried_after_the_delay_a_bounded_number_of_times():
    failed = schedule.finished(POLICY, Record("home-alice"), run("failed", at(2)), None, "boom")
    assert failed.attempts == 1
    assert not schedule.backup_due(POLICY, failed, at(2, 59))
    assert schedule.backup_due(POLICY, failed, at(3))
    twice = schedule.finished(POLICY, failed, run("failed", at(3)), None, "boom")
    assert twice.attempts == 2
    assert not schedule.backup_due(POLICY, twice, at(23))
    # A new period starts counting again.
    assert schedule.backup_due(POLICY, twice, at(2, day=1))
    again = schedule.finished(POLICY, twice, run("failed", at(2, day=1)), None, "boom")
    assert again.attempts == 1


def test_a_failed_or_killed_run_is_never_a_success():
    record = Record("home-alice")
    for state, found in (("failed", report()), ("failed", None), ("succeeded", None)):
        after = schedule.finished(POLICY, record, run(state, at(2)), found, "")
        assert after.last_success is None
        assert after.last_failure == at(2)
        assert after.archives is None and after.stored_size is None
        assert after.last_error == "the backup failed"


def test_a_success_records_sizes_and_keeps_the_last_failure():
    failed = schedule.finished(POLICY, Record("home-alice"), run("failed", at(2)), None, "lock")
    done = schedule.finished(POLICY, failed, run("succeeded", at(3)), report())
    assert done.last_success == at(3) and done.attempts == 0
    assert (done.last_failure, done.last_error) == (at(2), "lock")
    assert (done.archives, done.last_archive_size, done.last_archive_added) == (2, 1000, 100)
    assert (done.original_size, done.stored_size, done.dedup_ratio) == (4000, 500, 8.0)


def test_warnings_and_a_missing_folder_are_successes_that_say_so():
    first = schedule.finished(POLICY, Record("home-alice"), run("succeeded", at(2)), report())
    assert (first.last_outcome, first.last_warning) == (schedule.ARCHIVED, "")
    warned = dataclasses.replace(report(), warnings="a: [Errno 13] Permission denied")
    done = schedule.finished(POLICY, first, run("succeeded", at(2, day=1)), warned)
    assert done.last_success == at(2, day=1)
    assert done.last_outcome == schedule.ARCHIVED_WITH_WARNINGS
    assert done.last_warning == "a: [Errno 13] Permission denied"
    skipped = dataclasses.replace(report(), created=None, archives=0)
    none = schedule.finished(POLICY, Record("home-bob"), run("succeeded", at(2)), skipped)
    assert none.last_success == at(2) and none.last_outcome == records.SKIPPED
    assert (none.archives, none.last_archive_size, none.last_archive_added) == (0, None, None)
    failed = schedule.finished(POLICY, done, run("failed", at(2, day=2)), None, "rc 2")
    assert failed.last_outcome == schedule.FAILED and failed.last_success == at(2, day=1)
    assert schedule.load("home-alice", schedule.dump(done)) == done


def test_a_long_error_keeps_its_head_and_its_tail():
    message = "check c1: step check exited 1 (damage found): " + "x" * 5000 + " errors found."
    failed = schedule.finished(POLICY, Record("home-alice"), run("failed", at(2)), None, message)
    assert len(failed.last_error) <= schedule.MAX_ERROR
    assert failed.last_error.startswith("check c1: step check exited 1 (damage found)")
    assert failed.last_error.endswith("errors found.")


def test_a_run_counts_once():
    record = schedule.finished(POLICY, Record("home-alice"), run("succeeded", at(2)), report())
    assert not schedule.is_new(record, run("succeeded", at(2)))
    assert not schedule.is_new(record, run("running", at(3)))
    assert schedule.is_new(record, run("failed", at(3)))


def test_records_round_trip_and_a_damaged_one_starts_afresh():
    record = schedule.finished(POLICY, Record("home-alice"), run("succeeded", at(2)), report())
    assert schedule.load("home-alice", schedule.dump(record)) == record
    assert schedule.load("home-alice", "{not json") == Record("home-alice")
    assert schedule.load("home-alice", '{"attempts": "x", "last_run": 3}') == Record("home-alice")


def test_checks_come_every_n_periods_after_the_periods_backup():
    policy = Policy(check_every_days=7)
    record = schedule.finished(policy, Record("home-alice"), run("succeeded", at(2)), report())
    assert schedule.check_due(policy, record, at(3))
    checked = schedule.finished(policy, record, run("succeeded", at(3), "check"), None)
    assert checked.last_check == at(3) and checked.last_check_ok
    assert checked.last_success == at(2)
    later = schedule.finished(policy, checked, run("succeeded", at(2, day=6)), report())
    assert not schedule.check_due(policy, later, at(3, day=6))
    week = schedule.finished(policy, checked, run("succeeded", at(2, day=7)), report())
    assert schedule.check_due(policy, week, at(3, day=7))
    # Not before the period's backup, never with 0.
    assert not schedule.check_due(policy, checked, at(3, day=7))
    assert not schedule.check_due(Policy(check_every_days=0), record, at(3))


def test_a_failed_check_is_an_error_not_a_lost_backup():
    record = schedule.finished(POLICY, Record("home-alice"), run("succeeded", at(2)), report())
    failed = schedule.finished(POLICY, record, run("failed", at(3), "check"), None, "corrupt")
    assert failed.last_check_ok is False and failed.last_error == "corrupt"
    assert failed.last_success == at(2) and not schedule.backup_due(POLICY, failed, at(4))


def test_at_most_concurrency_jobs_and_one_per_repository():
    keys = ["home-alice", "home-bob", "home-carol", "project-p"]
    starts = schedule.to_start(POLICY, keys, {}, [], at(3), SINCE)
    assert [(s.key, s.kind) for s in starts] == [("home-alice", "backup"), ("home-bob", "backup")]
    running = [run("running", at(3), key="home-alice")]
    starts = schedule.to_start(POLICY, keys, {}, running, at(3), SINCE)
    assert [s.key for s in starts] == ["home-bob"]
    full = [*running, run("running", at(3), "check", "project-p")]
    assert schedule.to_start(POLICY, keys, {}, full, at(3), SINCE) == []


def test_checks_wait_for_a_free_slot_after_the_backups():
    keys = ["home-alice", "home-bob"]
    done = schedule.finished(POLICY, Record("home-alice"), run("succeeded", at(2)), report())
    starts = schedule.to_start(POLICY, keys, {"home-alice": done}, [], at(3), SINCE)
    assert [(s.key, s.kind) for s in starts] == [("home-bob", "backup"), ("home-alice", "check")]
    one = Policy(concurrency=1)
    starts = schedule.to_start(one, keys, {"home-alice": done}, [], at(3), SINCE)
    assert [(s.key, s.kind) for s in starts] == [("home-bob", "backup")]


def test_nothing_starts_in_the_second_of_the_last_run():
    failed = schedule.finished(POLICY, Record("home-alice"), run("failed", at(3)), None, "x")
    quick = Policy(retry_delay=timedelta(0))
    soon = at(3) + timedelta(milliseconds=900)
    assert schedule.backup_due(quick, failed, soon)
    assert schedule.to_start(quick, ["home-alice"], {"home-alice": failed}, [], soon, SINCE) == []
    later = at(3) + timedelta(seconds=1)
    starts = schedule.to_start(quick, ["home-alice"], {"home-alice": failed}, [], later, SINCE)
    assert [s.key for s in starts] == ["home-alice"]


def test_a_scheduler_started_in_the_day_waits_for_the_next_scheduled_time():
    keys = ["home-alice", "home-bob"]
    started = at(11)
    assert schedule.to_start(POLICY, keys, {}, [], at(11, 1), started) == []
    assert schedule.to_start(POLICY, keys, {}, [], at(1, day=1), started) == []
    starts = schedule.to_start(POLICY, keys, {}, [], at(2, day=1), started)
    assert [s.key for s in starts] == keys
    catch_up = dataclasses.replace(POLICY, catch_up=True)
    assert len(schedule.to_start(catch_up, keys, {}, [], at(11, 1), started)) == 2


def test_a_restarted_scheduler_carries_the_night_on():
    begun = schedule.finished(POLICY, Record("home-alice"), run("succeeded", at(2)), report())
    known = {"home-alice": begun}
    starts = schedule.to_start(POLICY, ["home-alice", "home-bob"], known, [], at(3), at(2, 30))
    assert starts[0] == schedule.Start("home-bob", "backup")
