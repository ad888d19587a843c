"""Batch jobs and Bunshin clones in software environments: the request's envs/NAME or
~/envs/NAME, the plan's checks, the command that activates the environment (run for real with sh)
and its volume."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from aiinfn_hub import cli
from aiinfn_hub.cli import jobs as jobs_cli
from aiinfn_hub.errors import UserError
from aiinfn_hub.services.jobs import manifests
from aiinfn_hub.services.jobs.manifests import BuildSettings, JobMeta, PodParts
from aiinfn_hub.services.jobs.request import CloneRequest, JobRequest, parse
from tests.unit.test_jobs_manifests import NOTEBOOK_POD, clone_plan
from tests.unit.test_jobs_plan import ALICE, CATALOG, plan_for

SETTINGS = BuildSettings(envs_claim="aiinfn-envs", envs_mount_path="/envs")
META = JobMeta("job-0123456789abcdef0123", "key-1", "d" * 64, "{}")
DEFAULT_IMAGE = CATALOG.environments["cpu"].image


def _body(environment: str) -> bytes:
    return f'{{"name": "t", "command": ["python"], "environment": "{environment}"}}'.encode()


def _clone_job(environment: str) -> dict:
    plan = clone_plan(environment=environment)
    return manifests.make_bunshin_job(META, plan, NOTEBOOK_POD, SETTINGS)


def test_requests_name_catalog_keys_or_environments() -> None:
    for good in ("cpu", "envs/hello", "~/envs/my-env"):
        assert parse(JobRequest, _body(good)).environment == good
    for bad in ("envs/../x", "~/envs/", "envs/Hello", "/envs/hello", "~/x/hello", "envs/a/b"):
        with pytest.raises(UserError, match="environment: String should match pattern"):
            parse(JobRequest, _body(bad))


def test_a_job_in_an_environment_runs_in_the_default_image() -> None:
    plan = plan_for(ALICE, environment="envs/hello")
    assert (plan.image, plan.software) == (DEFAULT_IMAGE, "envs/hello")
    assert plan_for(ALICE, environment="cpu").software is None
    mine = plan_for(ALICE, environment="~/envs/mine", accelerator="t4")
    assert (mine.image, mine.software) == (CATALOG.environments["ml-gpu"].image, "~/envs/mine")


def test_environments_stay_local_and_home_ones_need_the_home() -> None:
    with pytest.raises(UserError, match="runs on local nodes") as refused:
        plan_for(ALICE, environment="envs/hello", offload="may")
    assert refused.value.status == 400
    with pytest.raises(UserError, match="is in your home: add 'home'"):
        plan_for(ALICE, environment="~/envs/mine", volumes=["projects"])
    assert plan_for(ALICE, environment="envs/hello", volumes=["projects"]).software


def _job(environment: str) -> dict:
    plan = plan_for(ALICE, environment=environment)
    return manifests.make_job(META, plan, PodParts(image=plan.image), SETTINGS)


def test_the_command_activates_a_managed_environment_mounted_read_only() -> None:
    pod = _job("envs/hello")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == [
        "sh", "-c", manifests.ACTIVATE_SCRIPT, "aiinfn-env", "/envs/hello", "envs/hello",
        "python", "train.py",
    ]  # fmt: skip
    assert pod["volumes"][-1] == {
        "name": "envs",
        "persistentVolumeClaim": {"claimName": "aiinfn-envs", "readOnly": True},
    }
    assert container["volumeMounts"][-1] == {
        "name": "envs",
        "mountPath": "/envs",
        "readOnly": True,
    }


def test_a_home_environment_is_under_the_home_mount() -> None:
    pod = _job("~/envs/mine")["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"][4:6] == ["/home/jovyan/envs/mine", "~/envs/mine"]
    # The home comes with the job's own volumes; /envs too, for clones of managed ones.
    assert pod["volumes"][-1]["name"] == "envs"
    assert _job("cpu")["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "python",
        "train.py",
    ]


def _activate(folder: Path, *command: str) -> subprocess.CompletedProcess[str]:
    argv = ["sh", "-c", manifests.ACTIVATE_SCRIPT, "aiinfn-env", str(folder), "envs/x", *command]
    return subprocess.run(argv, capture_output=True, text=True, env={"PATH": os.defpath})


def test_the_activation_runs_the_command_or_says_why_not(tmp_path: Path) -> None:
    missing = _activate(tmp_path / "x", "true")
    assert missing.returncode == 127
    assert missing.stderr == (
        f"aiinfn: software environment envs/x not found or not readable by you ({tmp_path}/x)\n"
    )
    (tmp_path / "x" / "bin").mkdir(parents=True)
    (tmp_path / "x" / "aiinfn-env.json").write_text("{}")
    done = _activate(tmp_path / "x", "sh", "-c", 'echo "$VIRTUAL_ENV ${PATH%%:*} $0 $1"', "a", "b")
    assert (done.returncode, done.stdout) == (0, f"{tmp_path}/x {tmp_path}/x/bin a b\n")
    (tmp_path / "x" / "conda-meta").mkdir()
    conda = _activate(tmp_path / "x", "sh", "-c", 'echo "$CONDA_PREFIX"')
    assert conda.stdout == f"{tmp_path}/x\n"


def test_aiinfn_jobs_submit_passes_the_environment_through() -> None:
    args = cli.parser().parse_args(
        ["jobs", "submit", "--environment", "~/envs/mine", "--", "python", "run.py"]
    )
    body = jobs_cli.request_body(args, clone=False)
    assert (body["environment"], body["command"]) == ("~/envs/mine", ["python", "run.py"])
    assert parse(JobRequest, json.dumps(body).encode()).environment == "~/envs/mine"


def test_clones_name_software_environments_only() -> None:
    for good in ("envs/hello", "~/envs/my-env"):
        assert parse(CloneRequest, _body(good)).environment == good
    # A clone runs in its notebook's image: a catalog environment would be another image.
    for bad in ("cpu", "ml-gpu", "envs/../x", "/envs/hello"):
        with pytest.raises(UserError, match="environment: String should match pattern"):
            parse(CloneRequest, _body(bad))


def test_a_clone_in_an_environment_activates_it_in_the_notebooks_image() -> None:
    pod = _clone_job("envs/hello")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == NOTEBOOK_POD["spec"]["containers"][0]["image"]
    assert container["command"] == [
        "sh", "-c", manifests.ACTIVATE_SCRIPT, "aiinfn-env", "/envs/hello", "envs/hello",
        "python", "train.py", "--lr", "0.1",
    ]  # fmt: skip
    # The notebook's own read-only /envs, not a second one.
    assert [v["name"] for v in pod["volumes"]].count("envs") == 1
    home = _clone_job("~/envs/mine")["spec"]["template"]["spec"]["containers"][0]["command"]
    assert home[4:6] == ["/home/jovyan/envs/mine", "~/envs/mine"]
    assert clone_plan().software is None


def test_a_clone_in_an_environment_stays_local_and_a_home_one_needs_the_home() -> None:
    with pytest.raises(UserError, match="runs on local nodes"):
        clone_plan(environment="envs/hello", offload="may")
    with pytest.raises(UserError, match="is in your home: add 'home'"):
        clone_plan(environment="~/envs/mine", volumes=["scratch"])
    assert clone_plan(environment="envs/hello", volumes=["scratch"]).software == "envs/hello"


def test_aiinfn_jobs_clone_passes_the_environment_through() -> None:
    args = cli.parser().parse_args(
        ["jobs", "clone", "--environment", "~/envs/mine", "--", "python", "run.py"]
    )
    body = jobs_cli.request_body(args, clone=True)
    assert (body["environment"], body["command"]) == ("~/envs/mine", ["python", "run.py"])
    assert parse(CloneRequest, json.dumps(body).encode()).environment == "~/envs/mine"
