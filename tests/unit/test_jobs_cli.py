"""`aiinfn jobs`: where the service is, what a command line becomes, how answers are shown."""

import json

import pytest

from aiinfn_hub import cli
from aiinfn_hub.cli import client as cli_client
from aiinfn_hub.cli import jobs as jobs_cli


@pytest.mark.parametrize(
    "env, url",
    [
        (
            {"AIINFN_JOBS_URL": "https://hub.example/services/jobs"},
            "https://hub.example/services/jobs/",
        ),
        (
            {"JUPYTERHUB_PUBLIC_HUB_URL": "https://hub.example/hub/", "JUPYTERHUB_BASE_URL": "/"},
            "https://hub.example/services/jobs/",
        ),
        (
            {
                "JUPYTERHUB_PUBLIC_HUB_URL": "https://example.org/ai/hub/",
                "JUPYTERHUB_BASE_URL": "/ai/",
            },
            "https://example.org/ai/services/jobs/",
        ),
        (
            {"JUPYTERHUB_PUBLIC_URL": "http://127.0.0.1:8000/user/alice/"},
            "http://127.0.0.1:8000/services/jobs/",
        ),
    ],
)
def test_the_service_url_comes_from_the_notebook_environment(env, url):
    assert cli.service_url(env) == url


def test_without_a_url_the_user_is_told_what_to_set():
    with pytest.raises(cli.CliError, match="set AIINFN_JOBS_URL"):
        cli.service_url({"JUPYTERHUB_API_URL": "http://hub:8081/hub/api"})


@pytest.mark.parametrize(
    "command, name",
    [
        (["python", "train.py", "--lr", "3"], "train"),
        (["./Run_Sweep.sh"], "run-sweep"),
        (["julia", "fit.jl"], "fit"),
        (["nvidia-smi"], "nvidia-smi"),
        (["___"], "job"),
    ],
)
def test_default_names(command, name):
    assert jobs_cli.default_name(command) == name


def parse(*argv):
    return cli.parser().parse_args(["jobs", *argv])


def test_a_clone_command_line_becomes_a_request(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text("lr: 3\n")
    args = parse(
        "clone",
        "--accelerator",
        "t4",
        "--count",
        "1",
        "--priority",
        "low",
        "--volume",
        "home",
        "--setenv",
        "EPOCHS=3",
        "--file",
        "config.yaml",
        "--key",
        "k1",
        "--",
        "python",
        "train.py",
        "--lr=3",
    )
    assert jobs_cli.request_body(args, clone=True) == {
        "name": "train",
        "idempotency_key": "k1",
        "command": ["python", "train.py", "--lr=3"],
        "accelerator": "t4",
        "count": 1,
        "priority": "low",
        "volumes": ["home"],
        "env": {"EPOCHS": "3"},
        "files": {"config.yaml": "lr: 3\n"},
        "server": "",
        "working_dir": str(tmp_path),
    }


def test_a_script_submission_and_mistakes(tmp_path):
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    body = jobs_cli.request_body(
        parse("submit", "--script", str(script), "--environment", "cpu", "--offloadable"),
        clone=False,
    )
    assert (body["name"], body["script"], body["environment"], body["offloadable"]) == (
        "run",
        "#!/bin/sh\necho hi\n",
        "cpu",
        True,
    )
    assert "command" not in body and len(body["idempotency_key"]) == 32
    only = jobs_cli.request_body(parse("submit", "--offload", "only", "--", "run"), clone=False)
    assert only["offload"] == "only" and "offloadable" not in only
    assert "confidential" not in only
    secret = jobs_cli.request_body(parse("submit", "--confidential", "--", "run"), clone=False)
    assert secret["confidential"] is True
    custom = jobs_cli.request_body(
        parse("submit", "--image", "harbor.example.org/users/me/env:1", "--", "run"), clone=False
    )
    assert custom["image"] == "harbor.example.org/users/me/env:1" and "environment" not in custom
    once = jobs_cli.request_body(parse("submit", "--retries", "0", "--", "run"), clone=False)
    assert once["retries"] == 0 and "retries" not in custom
    with pytest.raises(SystemExit):
        parse("submit", "--offload", "always", "--", "run")
    with pytest.raises(cli.CliError, match="give the command to run after --"):
        jobs_cli.request_body(parse("submit"), clone=False)
    with pytest.raises(cli.CliError, match="--setenv takes NAME=VALUE"):
        jobs_cli.request_body(parse("submit", "--setenv", "OOPS", "--", "x"), clone=False)
    with pytest.raises(cli.CliError, match="cannot read"):
        jobs_cli.request_body(
            parse("submit", "--file", str(tmp_path / "missing"), "--", "x"), clone=False
        )
    with pytest.raises(cli.CliError, match="either --script or a command"):
        jobs_cli.request_body(parse("submit", "--script", str(script), "--", "x"), clone=False)


def test_no_token_no_call():
    with pytest.raises(cli.CliError, match="no hub token"):
        cli.run(parse("list"), {"AIINFN_JOBS_URL": "http://127.0.0.1:9/"})


def test_listings_are_one_line_per_job(capsys):
    job = {
        "id": "job-1",
        "name": "train",
        "kind": "batch",
        "project": "cms-ml",
        "state": "queued",
        "succeeded": 0,
        "completions": 2,
        "position": 3,
        "admission": None,
    }
    cli.show(
        {
            "jobs": [
                job,
                {
                    **job,
                    "id": "job-2",
                    "state": "running",
                    "position": None,
                    "admission": {"flavors": {"cpu": "t4", "nvidia.com/gpu": "t4"}},
                    "site": "local",
                },
                {
                    **job,
                    "id": "job-3",
                    "state": "running",
                    "position": None,
                    "admission": {"flavors": {"cpu": "interlink-infn-t1"}},
                    "site": "interlink-infn-t1",
                },
            ]
        },
        parse("list"),
    )
    assert capsys.readouterr().out.splitlines() == [
        "job-1  train                batch    cms-ml           queued     0/2 #3 in queue",
        "job-2  train                batch    cms-ml           running    0/2 on t4",
        "job-3  train                batch    cms-ml           running    0/2 on interlink-infn-t1 "
        "(remote site)",
    ]
    args = cli.parser().parse_args(["--json", "jobs", "status", "job-1"])
    cli.show(job, args)
    assert json.loads(capsys.readouterr().out) == job


@pytest.mark.parametrize(
    ("header", "attempt", "wait"),
    [("7", 0, 7.0), (None, 0, 1.0), (None, 1, 2.0), ("soon", 1, 2.0), ("3600", 0, 30.0)],
)
def test_a_retry_waits_the_services_retry_after_within_bounds(header, attempt, wait):
    assert cli_client.retry_wait(header, attempt) == wait


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("/home/jovyan/envs/mine", "~/envs/mine"),
        ("~/envs/mine", "~/envs/mine"),
        ("envs/hello", "envs/hello"),
        ("ml-gpu", "ml-gpu"),
        ("/home/jovyan/other/envs/mine", "/home/jovyan/other/envs/mine"),
    ],
)
def test_an_environment_the_shell_expanded_is_sent_as_home_relative(given, sent):
    assert jobs_cli.home_relative(given, "/home/jovyan/") == sent
