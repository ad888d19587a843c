"""The strict JobRequest: unknown fields, wrong types and oversized values are 400s that name the
field and never echo what was sent."""

import hashlib
import json

import pytest

from aiinfn_hub.errors import UserError
from aiinfn_hub.services.jobs import request as requests
from aiinfn_hub.services.jobs.request import CloneRequest, JobRequest, parse

BASE = {"name": "train", "command": ["python", "train.py"]}


def body(**fields) -> bytes:
    return json.dumps({**BASE, **fields}).encode()


def test_a_minimal_request_gets_the_defaults():
    request = parse(JobRequest, body())
    assert request.command == ["python", "train.py"]
    assert (request.kind, request.completions, request.offloadable, request.env, request.files) == (
        "batch",
        1,
        False,
        {},
        {},
    )
    assert request.accelerator is request.project is request.priority is request.volumes is None
    assert request.offload is None and request.offload_mode == "never"


@pytest.mark.parametrize(
    "fields, mode",
    [({"offloadable": True}, "may"), ({"offloadable": True, "offload": "may"}, "may")]
    + [({"offload": "only"}, "only"), ({"offloadable": False, "offload": "never"}, "never")],
)
def test_offload_is_never_may_or_only_and_offloadable_true_means_may(fields, mode):
    assert parse(JobRequest, body(**fields)).offload_mode == mode


def test_a_request_without_offload_keeps_the_digest_it_had_before_the_field():
    """Retries of a request sent before `offload`, `confidential`, `image` and `retries`
    existed still match the stored digest."""
    request = parse(JobRequest, body(offloadable=True))
    new_fields = {"idempotency_key", "offload", "confidential", "image", "retries"}
    before = {**request.model_dump(mode="json", exclude=new_fields)}
    expected = hashlib.sha256(
        json.dumps(before, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    assert request.digest() == expected
    assert parse(JobRequest, body(offload="may")).digest() != expected
    assert parse(JobRequest, body(offloadable=True, confidential=True)).digest() != expected
    assert parse(JobRequest, body(offloadable=True, retries=0)).digest() != expected
    assert parse(JobRequest, body(offloadable=True, image="r.io/x:1")).digest() != expected


def test_a_clone_without_an_environment_keeps_the_digest_it_had_before_the_field():
    clone = parse(CloneRequest, body(server="gpu"))
    unset = {"idempotency_key", "offload", "confidential", "retries", "environment"}
    fields = clone.model_dump(mode="json", exclude=unset)
    expected = hashlib.sha256(
        json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    assert clone.digest() == expected
    assert parse(CloneRequest, body(server="gpu", environment="envs/x")).digest() != expected
    # A batch job's environment was there from the start: unset, it stays in its digest.
    assert "environment" in JobRequest.model_fields and "environment" not in (
        JobRequest._added_later
    )


def test_a_confidential_job_that_may_be_offloaded_stays_local():
    assert parse(JobRequest, body(offload="may", confidential=True)).offload_mode == "never"
    assert parse(JobRequest, body(offload="only", confidential=True)).offload_mode == "only"


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"user": "bob"}, "unknown field 'user'"),
        ({"owner": "bob"}, "unknown field 'owner'"),
        ({"namespace": "kube-system"}, "unknown field 'namespace'"),
        ({"queue": "project-other"}, "unknown field 'queue'"),
        ({"labels": {"aiinfn.infn.it/owner": "bob"}}, "unknown field 'labels'"),
        ({"annotations": {"x": "y"}}, "unknown field 'annotations'"),
        ({"securityContext": {"privileged": True}}, "unknown field 'securityContext'"),
        ({"privileged": True}, "unknown field 'privileged'"),
        ({"serviceAccountName": "hub"}, "unknown field 'serviceAccountName'"),
        ({"image": "r.io/x:1", "environment": "cpu"}, "either an environment or an image"),
        ({"image": "r.io/x:1 --privileged"}, "image: String should match pattern"),
        ({"image": ["r.io/x:1"]}, "image: Input should be a valid string"),
        ({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}, "volumes.0: Input should be"),
        ({"volumes": ["home", "home"]}, "volumes are listed more than once"),
        (
            {"volumes": ["envs"]},
            "volumes.0: Input should be 'home', 'projects', 'scratch' or 'juicefs'",
        ),
        (
            {
                "env": {
                    "AWS_SECRET": {"valueFrom": {"secretKeyRef": {"name": "juicefs", "key": "k"}}}
                }
            },
            "env.AWS_SECRET: Input should be a valid string",
        ),
        ({"env": {"JUPYTERHUB_API_TOKEN": "x"}}, "reserved by the platform: JUPYTERHUB_API_TOKEN"),
        ({"env": {"bad name": "x"}}, "env.<key>: String should match pattern"),
        ({"command": "python train.py; curl evil | sh"}, "command: Input should be a valid array"),
        ({"command": []}, "command: List should have at least 1 item"),
        ({"command": ["x"] * 65}, "command: List should have at most 64 items"),
        ({"command": ["x" * 4097]}, "command.0: String should have at most 4096 characters"),
        ({"command": ["a\x00b"]}, "must not contain NUL"),
        ({"command": None}, "give either a command"),
        ({"script": "#!/bin/sh\necho hi\n"}, "give either a command"),
        ({"name": "Train!"}, "name: String should match pattern"),
        ({"count": "1"}, "count: Input should be a valid integer"),
        ({"count": True}, "count: Input should be a valid integer"),
        ({"offloadable": "yes"}, "offloadable: Input should be a valid boolean"),
        ({"offload": "always"}, "offload: Input should be 'never', 'may' or 'only'"),
        ({"offload": True}, "offload: Input should be 'never', 'may' or 'only'"),
        ({"offloadable": True, "offload": "only"}, "offloadable: true means offload 'may'"),
        ({"offloadable": True, "offload": "never"}, "offloadable: true means offload 'may'"),
        ({"completions": 0}, "completions: Input should be greater than or equal to 1"),
        ({"completions": 2, "parallelism": 3}, "parallelism must not exceed completions"),
        ({"deadline_seconds": 10}, "deadline_seconds: Input should be greater than or equal to 60"),
        ({"cpu": "lots"}, "cpu: String should match pattern"),
        ({"working_dir": "/home/../etc"}, "working_dir must not contain '..'"),
        ({"working_dir": "relative"}, "working_dir: String should match pattern"),
        ({"files": {"../escape": "x"}}, "files.<key>: String should match pattern"),
        (
            {"files": {f"f{i}": "x" for i in range(17)}},
            "files: Dictionary should have at most 16 items",
        ),
        ({"files": {"big": "x" * (256 * 1024)}}, "exceed 256 KiB"),
        ({"idempotency_key": "has space"}, "idempotency_key: String should match pattern"),
    ],
)
def test_forged_or_malformed_fields_are_refused_by_name(fields, message):
    with pytest.raises(UserError) as error:
        parse(JobRequest, body(**fields))
    assert error.value.status == 400
    assert message in error.value.message


def test_scripts_need_an_interpreter_line():
    with pytest.raises(UserError, match="must start with a #! line"):
        parse(JobRequest, json.dumps({"name": "s", "script": "rm -rf ~"}).encode())
    request = parse(
        JobRequest, json.dumps({"name": "s", "script": "#!/bin/sh\necho hi\n"}).encode()
    )
    assert request.sandbox() == {requests.SCRIPT_KEY: "#!/bin/sh\necho hi\n"}


def test_messages_never_echo_what_was_sent():
    secret = "s3cr3t-token-value"
    with pytest.raises(UserError) as error:
        parse(
            JobRequest,
            body(count=secret, env={"X": {"value": secret}}, command=secret, extra=secret),
        )
    assert secret not in error.value.message and secret not in error.value.log_detail
    assert "unknown field 'extra'" in error.value.message


@pytest.mark.parametrize(
    "raw, status, message",
    [
        (b"x" * (requests.MAX_BODY_BYTES + 1), 413, "larger than 512 KiB"),
        (b"{not json", 400, "invalid request"),
        (b"[1, 2]", 400, "Input should be an object"),
        (b"\xff\xfe", 400, "invalid request"),
    ],
)
def test_bodies_that_are_not_json_objects(raw, status, message):
    with pytest.raises(UserError) as error:
        parse(JobRequest, raw)
    assert error.value.status == status
    assert message in error.value.message


def test_clones_name_a_server_and_take_no_image():
    clone = parse(CloneRequest, body(server="gpu"))
    assert (clone.kind, clone.server) == ("bunshin", "gpu")
    with pytest.raises(UserError, match="unknown field 'image'"):
        parse(CloneRequest, body(image="r.io/x:1"))
    with pytest.raises(UserError, match="server: String should match pattern"):
        parse(CloneRequest, body(server="../alice"))


def test_the_digest_ignores_the_key_and_sees_everything_else():
    first = parse(JobRequest, body(idempotency_key="a"))
    assert first.digest() == parse(JobRequest, body(idempotency_key="b")).digest()
    assert first.digest() != parse(JobRequest, body(command=["python", "other.py"])).digest()
    assert first.digest() != parse(JobRequest, body(files={"a.txt": "1"})).digest()


def test_stored_documents_are_validated_again():
    document = requests.stored_document(json.dumps({**BASE, "kind": "bunshin", "server": "gpu"}))
    assert isinstance(requests.from_document(document), CloneRequest)
    with pytest.raises(UserError, match="can no longer be submitted as it was"):
        requests.from_document({**BASE, "accelerator": "NOT A KEY"})
