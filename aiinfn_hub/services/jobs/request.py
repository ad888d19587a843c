"""What a user may ask the job service for: strict request models, checked at the boundary.

Unknown fields, wrong types, over-long strings and too many items are refused with a 400 that
names the field. Identity (user, namespace, queue, labels, pod details) is never a field: who
the user is comes from the hub, where the job runs comes from the platform configuration.
Catalog keys and policy are checked later (`plan.py`), against the caller's groups.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ...errors import UserError

MAX_BODY_BYTES = 512 * 1024
MAX_ARGS = 64
MAX_ARG_LENGTH = 4096
MAX_COMMAND_BYTES = 32 * 1024
MAX_SCRIPT_BYTES = 64 * 1024
MAX_FILES = 16
MAX_SANDBOX_BYTES = 256 * 1024
MAX_ENV = 32
MAX_ENV_VALUE = 4096
MAX_RETRIES = 100
MAX_COMPLETIONS = 1000
MAX_PARALLELISM = 100
MAX_DEADLINE_SECONDS = 7 * 24 * 3600
MAX_TTL_SECONDS = 30 * 24 * 3600
VOLUME_KINDS = ("home", "projects", "scratch", "juicefs")
# Variables the platform sets (or must not be overridden) in every job container.
RESERVED_ENV = re.compile(r"^(JUPYTERHUB_|JPY_|AIINFN_|KUBERNETES_|JOB_COMPLETION_INDEX$)")
SCRIPT_KEY = "__script__"

Arg = Annotated[str, Field(min_length=1, max_length=MAX_ARG_LENGTH)]
Key = Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")]
# A catalog key, or a software environment: managed (envs/NAME) or the user's own (~/envs/NAME).
KeyOrEnvRef = Annotated[str, Field(pattern=r"^((~/)?envs/)?[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")]
EnvRef = Annotated[str, Field(pattern=r"^(~/)?envs/[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")]
Quantity = Annotated[str, Field(pattern=r"^[0-9]{1,6}(\.[0-9]{1,3})?(m|Ki|Mi|Gi|Ti)?$")]
FileName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
EnvValue = Annotated[str, Field(max_length=MAX_ENV_VALUE)]
ServerName = Annotated[str, Field(pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]{0,62})?$")]
WorkingDir = Annotated[str, Field(pattern=r"^/[^\x00]{0,1023}$")]
IdempotencyKey = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]
# A full image reference's characters; whether it is allowed is the catalog's custom_images.
Image = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,255}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _JobFields(_Strict):
    """Fields common to batch jobs and notebook clones."""

    # Fields added since the first release (see `digest`).
    _added_later: ClassVar[tuple[str, ...]] = ("offload", "confidential", "image", "retries")

    name: Key = Field(
        description="Short name shown in listings: lower-case letters, digits and '-'."
    )
    command: Annotated[list[Arg], Field(min_length=1, max_length=MAX_ARGS)] | None = Field(
        None, description="The program and its arguments, run as given (no shell)."
    )
    script: Annotated[str, Field(min_length=3, max_length=MAX_SCRIPT_BYTES)] | None = Field(
        None, description="A script starting with a #! line, run instead of a command."
    )
    accelerator: Key | None = Field(
        None, description="Catalog accelerator key (default: CPU only, or the notebook's)."
    )
    count: Annotated[int, Field(ge=0, le=16)] | None = Field(
        None, description="Accelerator units per pod."
    )
    cpu: Quantity | None = Field(None, description='CPU per pod, e.g. "4" or "500m".')
    memory: Quantity | None = Field(None, description='Memory per pod, e.g. "16Gi".')
    completions: Annotated[int, Field(ge=1, le=MAX_COMPLETIONS)] = Field(
        1, description="Pods that must succeed; each gets JOB_COMPLETION_INDEX (an indexed job)."
    )
    parallelism: Annotated[int, Field(ge=1, le=MAX_PARALLELISM)] | None = Field(
        None, description="Pods at once (default: min(completions, 100))."
    )
    project: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        None,
        description="One of your project groups; picks the queue (default: your only project).",
    )
    priority: Key | None = Field(None, description="One of the priorities the service offers.")
    offload: Literal["never", "may", "only"] | None = Field(
        None,
        description="Where it may run: 'never' (local nodes, the default), 'may' (local "
        "accelerators first, a remote site when the project's local quota is used up) or 'only' "
        "(a remote site).",
    )
    offloadable: bool = Field(
        False, description="The same as offload 'may' (kept for older clients)."
    )
    confidential: bool = Field(
        False,
        description="The job handles confidential data and stays on local nodes: offload 'may' "
        "is ignored, offload 'only' refused.",
    )
    volumes: (
        Annotated[list[Literal["home", "projects", "scratch", "juicefs"]], Field(max_length=4)]
        | None
    ) = Field(
        None,
        description="Your volumes to mount (default: home and projects; none unless offload is "
        "'never').",
    )
    env: Annotated[dict[EnvName, EnvValue], Field(max_length=MAX_ENV)] = Field(
        default_factory=dict, description="Extra environment variables (plain values)."
    )
    working_dir: WorkingDir | None = Field(
        None, description="Absolute working directory in the container."
    )
    deadline_seconds: Annotated[int, Field(ge=60, le=MAX_DEADLINE_SECONDS)] | None = Field(
        None, description="Stop the job after this long (activeDeadlineSeconds)."
    )
    ttl_seconds: Annotated[int, Field(ge=0, le=MAX_TTL_SECONDS)] | None = Field(
        None, description="Delete the finished job after this long."
    )
    retries: Annotated[int, Field(ge=0, le=MAX_RETRIES)] | None = Field(
        None,
        description="Failed pods the job survives, each tried again (backoffLimit): 0 fails "
        "the job at its first failed pod (default, and most: the service's backoff_limit). "
        "Preemptions never count.",
    )
    files: Annotated[dict[FileName, str], Field(max_length=MAX_FILES)] = Field(
        default_factory=dict, description="Small files put in the job's sandbox folder."
    )
    idempotency_key: IdempotencyKey | None = Field(
        None, description="Submitting again with the same key returns the first job."
    )

    @model_validator(mode="after")
    def _consistent(self) -> _JobFields:
        if (self.command is None) == (self.script is None):
            raise ValueError("give either a command (a list of arguments) or a script")
        if (
            self.command is not None
            and sum(len(a.encode()) for a in self.command) > MAX_COMMAND_BYTES
        ):
            raise ValueError(f"the command is longer than {MAX_COMMAND_BYTES} bytes")
        if self.script is not None and not self.script.startswith("#!"):
            raise ValueError("a script must start with a #! line naming its interpreter")
        if any("\x00" in a for a in self.command or ()):
            raise ValueError("command arguments must not contain NUL characters")
        size = sum(len(k.encode()) + len(v.encode()) for k, v in self.files.items())
        if size + len((self.script or "").encode()) > MAX_SANDBOX_BYTES:
            raise ValueError(f"the sandbox files and script exceed {MAX_SANDBOX_BYTES // 1024} KiB")
        if self.volumes is not None and len(set(self.volumes)) != len(self.volumes):
            raise ValueError("volumes are listed more than once")
        reserved = sorted(k for k in self.env if RESERVED_ENV.match(k))
        if reserved:
            raise ValueError(
                f"environment variable(s) reserved by the platform: {', '.join(reserved)}"
            )
        if self.offloadable and self.offload not in (None, "may"):
            raise ValueError("offloadable: true means offload 'may'; give offload alone")
        if self.parallelism is not None and self.parallelism > self.completions:
            raise ValueError("parallelism must not exceed completions")
        if self.working_dir is not None and ".." in self.working_dir.split("/"):
            raise ValueError("working_dir must not contain '..'")
        return self

    @property
    def offload_mode(self) -> str:
        """never, may or only: `offload`, else `offloadable` (true is "may"); a confidential
        job that may be offloaded is not (one that must be is refused by the plan)."""
        mode = self.offload or ("may" if self.offloadable else "never")
        return "never" if self.confidential and mode == "may" else mode

    def sandbox(self) -> dict[str, str]:
        """The files of the job's sandbox folder, the script under its own key."""
        files = dict(self.files)
        if self.script is not None:
            files[SCRIPT_KEY] = self.script
        return files

    def digest(self) -> str:
        """A fingerprint of the request (without its idempotency key), to tell a retry from a
        different job that reuses a key."""
        body = self.model_dump(mode="json", exclude={"idempotency_key"})
        # Fields added later are left out while unset, as before they existed: a retry of a
        # request sent to an older service keeps its digest.
        for key in self._added_later:
            if body.get(key) is None or body.get(key) is False:
                body.pop(key, None)
        return hashlib.sha256(
            json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()


class JobRequest(_JobFields):
    """A batch job: an environment from the catalog runs your command."""

    kind: Literal["batch"] = "batch"
    environment: KeyOrEnvRef | None = Field(
        None,
        description="Catalog environment key (default: the first that fits), or a software "
        "environment, envs/NAME (managed) or ~/envs/NAME (yours), activated in the default "
        "image.",
    )
    image: Image | None = Field(
        None,
        description="A custom image instead of an environment, for groups allowed custom "
        "images; the catalog's custom_images must allow it for the accelerator's kind.",
    )

    @model_validator(mode="after")
    def _one_image(self) -> JobRequest:
        if self.image is not None and self.environment is not None:
            raise ValueError("give either an environment or an image, not both")
        return self


class CloneRequest(_JobFields):
    """A Bunshin job: a copy of your running notebook server with another command."""

    _added_later = (*_JobFields._added_later, "environment")
    kind: Literal["bunshin"] = "bunshin"
    server: ServerName = Field(
        "", description="Which of your servers to clone ('' is the default server)."
    )
    environment: EnvRef | None = Field(
        None,
        description="A software environment, envs/NAME (managed) or ~/envs/NAME (yours), "
        "activated in the notebook's image (default: the notebook's own environment).",
    )


class ResubmitRequest(_Strict):
    idempotency_key: IdempotencyKey | None = None


AnyRequest = JobRequest | CloneRequest


_SHOWN_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _part(part: Any) -> str:
    """A location step: field names and indices as they are, other keys only if plainly a name."""
    return str(part) if isinstance(part, int) or _SHOWN_KEY.fullmatch(part) else "<key>"


def _describe(error: Mapping[str, Any]) -> str:
    where = ".".join(_part(part) for part in error["loc"] if part != "[key]") or "body"
    if error["type"] == "extra_forbidden":
        return f"unknown field '{where}'"
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if error["loc"] else message


def parse(model: type[_Strict], body: bytes) -> Any:
    """Validate a JSON body into `model`; a UserError (400/413) lists what is wrong.

    Messages name fields and rules, never echo the submitted values."""
    if len(body) > MAX_BODY_BYTES:
        raise UserError(f"the request body is larger than {MAX_BODY_BYTES // 1024} KiB", status=413)
    try:
        return model.model_validate_json(body or b"{}")
    except pydantic.ValidationError as error:
        problems = [_describe(e) for e in error.errors(include_input=False, include_url=False)]
        shown = "; ".join(problems[:5]) + (
            f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        )
        raise UserError(
            f"invalid request: {shown}",
            reason="invalid-request",
            log_detail=f"invalid request ({len(problems)} problems): {shown}",
        ) from None


def stored_document(text: str) -> dict[str, Any]:
    """A request as this service recorded it on a Job (JSON of `model_dump_json`)."""
    document = json.loads(text)
    if not isinstance(document, dict):
        raise ValueError("a stored request is a JSON object")
    return document


def from_document(document: dict[str, Any]) -> AnyRequest:
    """Validate a request document again (a resubmission is checked like a new request)."""
    model = CloneRequest if document.get("kind") == "bunshin" else JobRequest
    try:
        return model.model_validate(document)
    except pydantic.ValidationError as error:
        problems = "; ".join(
            _describe(e) for e in error.errors(include_input=False, include_url=False)[:5]
        )
        raise UserError(
            f"this job can no longer be submitted as it was: {problems}", reason="invalid-request"
        ) from None
