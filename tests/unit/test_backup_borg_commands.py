"""borg command lines, literally: argv and environment, the passphrase in neither."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from aiinfn_hub.services.backup import borg
from aiinfn_hub.services.backup.paths import RestoreRefused

REPO = "/aiinfn/backup-target/homes/alice"
SETTINGS = borg.BorgSettings(host_id="aiinfn-backup-pod:backup-home-x-1-abcde")
COMMON = ("--lock-wait", "1", "--umask", "0077")
ENV = {
    "BORG_PASSCOMMAND": "cat /aiinfn/backup-key/passphrase",
    "BORG_BASE_DIR": "/aiinfn/borg",
    "TZ": "UTC",
    "USER": "aiinfn-backup",
    "BORG_RELOCATED_REPO_ACCESS_IS_OK": "no",
    "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "no",
    "BORG_CHECK_I_KNOW_WHAT_I_AM_DOING": "NO",
    "BORG_DELETE_I_KNOW_WHAT_I_AM_DOING": "NO",
    "BORG_HOST_ID": "aiinfn-backup-pod:backup-home-x-1-abcde",
}


def test_init_uses_authenticated_encryption_with_the_key_in_the_repository():
    command = borg.init(SETTINGS, REPO)
    assert command.argv == ("borg", "init", *COMMON, "--encryption=repokey-blake2", "--", REPO)
    assert command.env == ENV


def test_create_compresses_stays_on_one_file_system_and_skips_caches():
    command = borg.create(SETTINGS, REPO, "2026-12-05T020000Z", ["."])
    assert command.argv == (
        "borg",
        "create",
        *COMMON,
        "--json",
        "--compression",
        "zstd,3",
        "--one-file-system",
        "--numeric-ids",
        "--exclude-caches",
        "--exclude",
        "sh:**/.cache",
        "--exclude",
        "sh:**/__pycache__",
        "--",
        f"{REPO}::2026-12-05T020000Z",
        ".",
    )
    # Symlinks are stored as links: nothing that would make borg follow them.
    assert not {"--dereference", "--read-special"} & set(command.argv)


def test_prune_keeps_7_daily_4_weekly_6_monthly_by_default_and_is_configurable():
    assert borg.prune(SETTINGS, REPO).argv == (
        "borg",
        "prune",
        *COMMON,
        "--list",
        "--keep-daily=7",
        "--keep-weekly=4",
        "--keep-monthly=6",
        "--",
        REPO,
    )
    settings = borg.BorgSettings(retention=borg.Retention(daily=14, weekly=0, monthly=12))
    assert borg.prune(settings, REPO).argv[7:10] == (
        "--keep-daily=14",
        "--keep-weekly=0",
        "--keep-monthly=12",
    )


@pytest.mark.parametrize("counts", [(0, 0, 0), (-1, 4, 6), (7, True, 6), (7.5, 4, 6), ("7", 4, 6)])
def test_a_retention_that_keeps_nothing_or_is_not_counts_is_refused(counts):
    with pytest.raises(ValueError):
        borg.Retention(*counts)


def test_maintenance_commands():
    assert borg.compact(SETTINGS, REPO).argv == ("borg", "compact", *COMMON, "--", REPO)
    assert borg.check(SETTINGS, REPO).argv == ("borg", "check", *COMMON, "--", REPO)
    assert borg.check(SETTINGS, REPO, verify_data=True).argv == (
        "borg",
        "check",
        *COMMON,
        "--verify-data",
        "--",
        REPO,
    )
    assert borg.break_lock(SETTINGS, REPO).argv == ("borg", "break-lock", *COMMON, "--", REPO)


def test_listing_and_info_ask_for_json_and_may_bypass_the_lock_of_a_read_only_repository():
    assert borg.list_archives(SETTINGS, REPO).argv == (
        "borg",
        "list",
        *COMMON,
        "--json",
        "--",
        REPO,
    )
    assert borg.list_paths(SETTINGS, REPO, "a1", "work/", bypass_lock=True).argv == (
        "borg",
        "list",
        *COMMON,
        "--bypass-lock",
        "--json-lines",
        "--",
        f"{REPO}::a1",
        "work",
    )
    assert borg.info(SETTINGS, REPO).argv == ("borg", "info", *COMMON, "--json", "--", REPO)
    assert borg.info(SETTINGS, REPO, "a1").argv[-1] == f"{REPO}::a1"
    # Every archive's sizes in one call (the glob quoted by argv, never by a shell).
    assert borg.info_archives(SETTINGS, REPO, bypass_lock=True).argv == (
        "borg", "info", *COMMON, "--bypass-lock", "--json", "--glob-archives", "*", "--", REPO,
    )  # fmt: skip


def test_extract_restores_one_path_read_only_by_default():
    assert borg.extract(SETTINGS, REPO, "a1", "-rf").argv == (
        "borg",
        "extract",
        *COMMON,
        "--bypass-lock",
        "--numeric-ids",
        "--",
        f"{REPO}::a1",
        "-rf",
    )
    assert borg.extract(SETTINGS, REPO, "a1", "").argv[-1] == f"{REPO}::a1"


@pytest.mark.parametrize(
    ("archive", "path"), [("../a", "x"), ("a::b", "x"), ("a", "../x"), ("a", "/etc/shadow")]
)
def test_commands_are_never_built_from_unchecked_names(archive, path):
    with pytest.raises(RestoreRefused):
        borg.extract(SETTINGS, REPO, archive, path)


def test_a_repository_is_an_absolute_path():
    with pytest.raises(ValueError):
        borg.init(SETTINGS, "homes/alice")


def test_the_passphrase_file_is_read_by_a_command_never_passed_as_a_value():
    settings = borg.BorgSettings(passphrase_file="/keys/a b/pass'phrase")
    env = borg.init(settings, REPO).env
    assert env["BORG_PASSCOMMAND"] == "cat '/keys/a b/pass'\"'\"'phrase'"
    assert "BORG_PASSPHRASE" not in env
    assert "BORG_HOST_ID" not in env  # without a host id borg uses its own


def test_archive_names_are_the_utc_start_time():
    when = datetime(2026, 12, 5, 3, 4, 5, tzinfo=timezone(timedelta(hours=1)))
    assert borg.archive_for(when) == "2026-12-05T020405Z"
    assert borg.archive_for(datetime(2026, 1, 2, tzinfo=UTC)) == "2026-01-02T000000Z"
    with pytest.raises(ValueError):
        borg.archive_for(datetime(2026, 1, 2))
