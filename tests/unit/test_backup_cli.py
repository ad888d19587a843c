"""`aiinfn backup`: where the service is, which requests a command line makes, how a restore is
waited for, how answers are shown."""

from __future__ import annotations

import json

import pytest

from aiinfn_hub import cli
from aiinfn_hub.cli import backup as backup_cli

ENV = {
    "JUPYTERHUB_API_TOKEN": "notebook-token",
    "JUPYTERHUB_USER": "alice",
    "AIINFN_BACKUP_URL": "http://proxy-public/services/backup",
}


class Calls:
    """The requests a command makes, answered in order."""

    def __init__(self, monkeypatch, *answers):
        self.made: list[tuple] = []
        self.answers = list(answers)
        self.clients: list[tuple] = []
        calls = self

        def call(client, method, path, body=None, retry=False):
            calls.clients.append((client.url, client.token, client.what))
            calls.made.append((method, path, body))
            return calls.answers.pop(0)

        monkeypatch.setattr(cli.Client, "call", call)
        monkeypatch.setattr(backup_cli.time, "sleep", lambda seconds: None)


def parse(*argv):
    return cli.parser().parse_args(["backup", *argv])


@pytest.mark.parametrize(
    "env, url",
    [
        ({"AIINFN_BACKUP_URL": "http://proxy-public/services/backup"}, "http://proxy-public/"),
        (
            {
                "JUPYTERHUB_PUBLIC_HUB_URL": "https://example.org/ai/hub/",
                "JUPYTERHUB_BASE_URL": "/ai/",
            },
            "https://example.org/ai/",
        ),
        # The jobs' variable is the jobs': never the backup service's address.
        (
            {
                "AIINFN_JOBS_URL": "http://proxy-public/services/jobs/",
                "JUPYTERHUB_PUBLIC_URL": "http://127.0.0.1:8000/user/alice/",
            },
            "http://127.0.0.1:8000/",
        ),
    ],
)
def test_the_backup_service_url_comes_from_the_notebook_environment(env, url):
    assert cli.service_url(env, "backup") == url + "services/backup/"


def test_without_a_url_the_user_is_told_what_to_set():
    with pytest.raises(cli.CliError, match="where the backup service is: set AIINFN_BACKUP_URL"):
        cli.service_url({}, "backup")


def test_list_asks_for_the_callers_own_home_with_the_notebooks_token(monkeypatch):
    calls = Calls(monkeypatch, {"archives": []})
    cli.run(parse("list"), ENV)
    assert calls.made == [("GET", "api/repositories/home/alice/archives", None)]
    assert calls.clients == [
        ("http://proxy-public/services/backup/", "notebook-token", "backup service")
    ]


def test_a_project_or_another_users_home_is_named_quoted(monkeypatch):
    calls = Calls(monkeypatch, {"archives": []}, {"archives": []})
    cli.run(parse("list", "--project", "cms-ml"), ENV)
    cli.run(parse("list", "--user", "a/../b"), ENV)
    assert [path for _, path, _ in calls.made] == [
        "api/repositories/project/cms-ml/archives",
        "api/repositories/home/a%2F..%2Fb/archives",
    ]
    with pytest.raises(SystemExit):
        parse("list", "--project", "p", "--user", "u")


def test_without_a_user_or_a_token_no_call(monkeypatch):
    calls = Calls(monkeypatch)
    with pytest.raises(cli.CliError, match="cannot tell whose home"):
        cli.run(parse("list"), {k: v for k, v in ENV.items() if k != "JUPYTERHUB_USER"})
    with pytest.raises(cli.CliError, match="no hub token"):
        cli.run(parse("list"), {k: v for k, v in ENV.items() if k != "JUPYTERHUB_API_TOKEN"})
    assert calls.made == []


def test_ls_lists_one_folder_of_an_archive(monkeypatch):
    calls = Calls(monkeypatch, {"entries": []}, {"entries": []})
    cli.run(parse("ls", "2026-12-05T020000Z"), ENV)
    cli.run(parse("ls", "2026-12-05T020000Z", "work/a b&c"), ENV)
    assert [path for _, path, _ in calls.made] == [
        "api/repositories/home/alice/archives/2026-12-05T020000Z/paths",
        "api/repositories/home/alice/archives/2026-12-05T020000Z/paths?folder=work%2Fa+b%26c",
    ]


RUNNING = {
    "id": "restore-1",
    "archive": "2026-12-05T020000Z",
    "path": "notebook.ipynb",
    "destination": "/home/alice/restored/2026-12-05T020000Z/notebook.ipynb",
    "state": "running",
}


def test_restore_starts_a_run_and_waits_for_it(monkeypatch, capsys):
    done = {**RUNNING, "kind": "restore", "state": "succeeded"}
    calls = Calls(monkeypatch, RUNNING, {**done, "state": "running"}, done)
    args = parse("restore", "2026-12-05T020000Z", "notebook.ipynb")
    cli.show(cli.run(args, ENV), args)
    assert calls.made == [
        (
            "POST",
            "api/restores",
            {
                "kind": "home",
                "name": "alice",
                "archive": "2026-12-05T020000Z",
                "path": "notebook.ipynb",
            },
        ),
        ("GET", "api/runs/restore-1", None),
        ("GET", "api/runs/restore-1", None),
    ]
    assert capsys.readouterr().out.splitlines() == [
        "restore-1  restore of 2026-12-05T020000Z into "
        "/home/alice/restored/2026-12-05T020000Z/notebook.ipynb: succeeded"
    ]


def test_a_refused_restore_is_the_users_error(monkeypatch):
    message = "/home/alice/restored/x already exists; nothing was restored."
    refused = {**RUNNING, "state": "refused", "status": 409, "message": message}
    Calls(monkeypatch, RUNNING, refused)
    with pytest.raises(cli.CliError) as error:
        cli.run(parse("restore", "2026-12-05T020000Z"), ENV)
    assert str(error.value) == message
    Calls(monkeypatch, RUNNING, {**RUNNING, "state": "failed"})
    with pytest.raises(cli.CliError, match="restore-1: failed"):
        cli.run(parse("restore", "2026-12-05T020000Z"), ENV)


def test_restore_without_waiting_and_an_admins_folder(monkeypatch, capsys):
    calls = Calls(monkeypatch, RUNNING)
    args = parse("restore", "A1", "--project", "qml", "--folder", "recovered", "--no-wait")
    cli.show(cli.run(args, ENV), args)
    assert calls.made == [
        (
            "POST",
            "api/restores",
            {"kind": "project", "name": "qml", "archive": "A1", "path": "", "folder": "recovered"},
        )
    ]
    assert capsys.readouterr().out.splitlines()[1] == (
        "  see how it goes: aiinfn backup status restore-1"
    )


def test_listings_are_one_line_each(capsys):
    sized = {"name": "A2", "time": "2026-12-06T02:00:00+00:00", "files": 3}
    sized.update(original_size=3 * 1024**3, compressed_size=1536, deduplicated_size=100)
    archives = [sized, {"name": "A1", "time": "2026-12-05T02:00:00+00:00"}]
    cli.show({"archives": archives}, parse("list"))
    cli.show({"archives": []}, parse("list"))
    entries = [
        {
            "path": "work",
            "type": "folder",
            "mode": "drwxr-x---",
            "size": 0,
            "mtime": "2026-12-04T10:00:00+00:00",
        },
        {
            "path": "work/link",
            "type": "symlink",
            "mode": "lrwxrwxrwx",
            "size": 0,
            "mtime": "2026-12-04T10:00:00+00:00",
            "link_target": "../notebook.ipynb",
        },
    ]
    cli.show({"entries": entries}, parse("ls", "A1"))
    assert capsys.readouterr().out.splitlines() == [
        "A2  2026-12-06T02:00:00+00:00  3.0 GiB original, 1.5 KiB compressed, 100 B only in it",
        "A1  2026-12-05T02:00:00+00:00",
        "no archives yet",
        "drwxr-x---            0 2026-12-04T10:00:00+00:00  work/",
        "lrwxrwxrwx            0 2026-12-04T10:00:00+00:00  work/link -> ../notebook.ipynb",
    ]
    args = cli.parser().parse_args(["--json", "backup", "status", "restore-1"])
    cli.show(RUNNING, args)
    assert json.loads(capsys.readouterr().out) == RUNNING
