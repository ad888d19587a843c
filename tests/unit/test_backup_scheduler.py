"""The scheduler's reading of Jobs and pods, its records for admins, and its metrics. Pure parts
only; the loop runs against a real dev cluster in tests/integration/test_backup_schedule.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiinfn_hub.services.backup import handlers, schedule, scheduler
from aiinfn_hub.services.backup.schedule import Record

WHEN = datetime(2026, 12, 5, 2, 0, 1, tzinfo=UTC)


def job(component: str, kind: str, owner: str, conditions: list | None = None) -> dict:
    notes = {"aiinfn.infn.it/owner-name" if kind == "home" else "aiinfn.infn.it/project": owner}
    return {
        "metadata": {
            "name": f"{component}-x",
            "creationTimestamp": "2026-12-05T02:00:01Z",
            "labels": {"app.kubernetes.io/component": component, "aiinfn.infn.it/job-kind": kind},
            "annotations": notes,
        },
        "status": {"conditions": conditions or []},
    }


def test_backup_and_check_jobs_are_runs_of_their_repository():
    failed = [{"type": "Failed", "status": "True"}]
    assert scheduler.run_of(job("backup", "home", "alice")) == schedule.Run(
        "backup-x", "home-alice", "backup", WHEN, "running"
    )
    run = scheduler.run_of(job("backup-check", "project", "cms-ml", failed))
    assert run == schedule.Run("backup-check-x", "project-cms-2dml", "check", WHEN, "failed")
    assert scheduler.run_of(job("restore", "home", "alice")) is None
    assert scheduler.run_of(job("backup-list", "home", "alice")) is None
    assert scheduler.run_of(job("backup", "dataset", "alice")) is None


def test_the_failed_step_is_the_first_non_zero_exit():
    def status(name: str, code: int | None) -> dict:
        state = {"terminated": {"exitCode": code}} if code is not None else {"running": {}}
        return {"name": name, "state": state}

    pod = {
        "status": {
            "initContainerStatuses": [status("init", 0), status("create", 137)],
            "containerStatuses": [status("report", None)],
        }
    }
    assert scheduler.failed_step(pod) == ("create", 137)
    assert scheduler.failed_step({"status": {"containerStatuses": [status("a", 0)]}}) is None
    assert scheduler.failed_step(None) is None


def test_an_admin_sees_a_record_with_iso_times_and_no_bookkeeping():
    record = Record(
        "home-alice", "home", "alice", last_run=WHEN, last_success=WHEN, archives=3, dedup_ratio=2.5
    )
    document = scheduler.record_document(record)
    assert "last_run" not in document
    assert document["last_success"] == "2026-12-05T02:00:01+00:00"
    assert (document["kind"], document["name"], document["archives"]) == ("home", "alice", 3)
    assert document["last_failure"] is None and document["dedup_ratio"] == 2.5


class Records:
    def __init__(self, records: dict[str, Record]) -> None:
        self.records = records


def test_metrics_by_repository_for_the_stale_backup_alert():
    ok = Record("home-alice", "home", "alice", last_success=WHEN, archives=2, stored_size=10)
    checked = Record(
        "project-cms-2dml",
        "project",
        "cms-ml",
        last_failure=WHEN + timedelta(hours=1),
        last_check_ok=False,
    )
    metrics = handlers.BackupMetrics(Records({"a": ok, "b": checked}))  # type: ignore[arg-type]
    text = metrics.exposition().decode()
    line = 'aiinfn_backup_last_success_timestamp_seconds{kind="home",name="alice"} '
    value = next(row for row in text.splitlines() if row.startswith(line))
    assert float(value.removeprefix(line)) == WHEN.timestamp()
    assert 'aiinfn_backup_archives{kind="home",name="alice"} 2.0' in text
    assert 'aiinfn_backup_stored_bytes{kind="home",name="alice"} 10.0' in text
    assert 'aiinfn_backup_last_check_success{kind="project",name="cms-ml"} 0.0' in text
    assert 'aiinfn_backup_last_failure_timestamp_seconds{kind="project",name="cms-ml"}' in text
    assert 'aiinfn_backup_last_success_timestamp_seconds{kind="project"' not in text
    assert "aiinfn_backup_last_backup_warnings{" not in text  # no outcome recorded yet


def test_metrics_say_which_last_backup_had_warnings():
    warned = Record("home-alice", "home", "alice", last_outcome=schedule.ARCHIVED_WITH_WARNINGS)
    clean = Record("home-bob", "home", "bob", last_outcome=schedule.ARCHIVED)
    skipped = Record("project-qml", "project", "qml", last_outcome=schedule.SKIPPED)
    records = {"a": warned, "b": clean, "c": skipped}
    text = handlers.BackupMetrics(Records(records)).exposition().decode()  # type: ignore[arg-type]
    assert 'aiinfn_backup_last_backup_warnings{kind="home",name="alice"} 1.0' in text
    assert 'aiinfn_backup_last_backup_warnings{kind="home",name="bob"} 0.0' in text
    assert 'aiinfn_backup_last_backup_warnings{kind="project"' not in text
