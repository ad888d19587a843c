"""What the pod runner starts for a pod: argv, environment, user and mounts (pure).

The dev cluster's pod runner (`podrunner.py`) plays the kubelet for pods whose first container's
image is played by a local environment (`LocalImage`). This module decides, from the pod and the
objects it references, what a kubelet and a container runtime would give each container; the
runner fetches the objects and `sandbox.py` carries the plan out.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import math
import posixpath
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from aiinfn_hub import quantities

DEFAULT_FILE_MODE = 0o644
# What the host provides to every container, read-only, at the same paths (like an image's root).
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_WILDCARD_HOSTS = {"0.0.0.0", "", "[::]", "::"}


class ConfigError(Exception):
    """The container cannot be configured as asked (kubelet: CreateContainerConfigError)."""


class MountError(Exception):
    """A volume cannot be set up yet or at all (kubelet: a FailedMount event, retried)."""


@dataclass(frozen=True)
class LocalImage:
    """A container image played by a local environment: what its Dockerfile would say
    (defaults: a Jupyter docker-stacks image, whose user is jovyan, 1000:100)."""

    prefix: str
    cmd: tuple[str, ...] = ("jupyterhub-singleuser",)
    user: str = "jovyan"
    uid: int = 1000
    gid: int = 100
    group: str = "users"
    home: str = "/home/jovyan"
    # The platform's Jupyter configuration the image carries (images/notebook/jupyter), if any.
    jupyter_config: str = ""
    # The image's ENV lines: "docker-stacks" (SHELL, NB_USER, NB_UID, NB_GID), "python" (the
    # official Python images z2jh's hub image is built on: PATH and LANG only) or "debian"
    # (Debian's own images: PATH only; the prefix "" adds nothing to it).
    base: str = "docker-stacks"
    workdir: str = ""  # WORKDIR; "" is the home (docker-stacks' WORKDIR is $HOME)
    # What the image adds (COPY): path in the image -> the host folder or file with that content.
    files: tuple[tuple[str, str], ...] = ()

    def env(self) -> dict[str, str]:
        """The image's ENV lines, and HOME, which the runtime sets from the image's user."""
        path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        env = {"PATH": f"{self.prefix}/bin:{path}" if self.prefix else path, "HOME": self.home}
        if self.base != "debian":
            env["LANG"] = "C.UTF-8"
        if self.base == "docker-stacks":
            env.update(
                {
                    "SHELL": "/bin/bash",
                    "USER": self.user,
                    "NB_USER": self.user,
                    "NB_UID": str(self.uid),
                    "NB_GID": str(self.gid),
                }
            )
        if self.jupyter_config:
            env["JUPYTER_CONFIG_PATH"] = self.jupyter_config
        return env

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LocalImage:
        return cls(
            **{
                **data,
                "cmd": tuple(data.get("cmd", cls.cmd)),
                "files": tuple(tuple(pair) for pair in data.get("files", ())),
            }
        )


@dataclass(frozen=True)
class Objects:
    """What the pod references, fetched by the runner: decoded Secret/ConfigMap data (None: not
    found), each claim's host directory (or the MountError message why there is none), and
    service account tokens by audience ("" for the API server's own)."""

    secrets: Mapping[str, Mapping[str, bytes] | None] = field(default_factory=dict)
    config_maps: Mapping[str, Mapping[str, bytes] | None] = field(default_factory=dict)
    claims: Mapping[str, tuple[str, bool] | str] = field(default_factory=dict)
    tokens: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Volume:
    """A pod volume on this machine: a host directory, and for secret-like volumes the files the
    runner keeps written in it (path inside the volume -> (content, mode))."""

    path: str
    read_only: bool = False
    files: Mapping[str, tuple[bytes, int]] | None = None
    stand_in: str = ""  # why an empty folder stands in for a source this machine does not have


@dataclass(frozen=True)
class Mount:
    """One bind mount of the sandbox: host source -> container target."""

    source: str
    target: str
    read_only: bool
    is_file: bool = False


@dataclass(frozen=True)
class Plan:
    """Everything sandbox.py needs to start one container (serialised to JSON)."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    uid: int
    gid: int
    groups: list[int]
    hostname: str
    no_new_privs: bool
    read_only_root: bool
    host_paths: list[str]
    mounts: list[Mount]
    etc: dict[str, str]
    root: str
    log: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


def runner_image(pod: Mapping[str, Any]) -> str | None:
    """The image that decides who plays the pod: the first container's, the field kwok's pod
    stages test (components.RUNNER_IMAGE_KEY)."""
    containers = pod.get("spec", {}).get("containers") or []
    return containers[0].get("image") if containers else None


# -- $(VAR) references -------------------------------------------------------------------------


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes $(VAR) expansion: defined names are replaced, $$ escapes, the rest stays."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            following = text[i + 1]
            if following == "$":
                out.append("$")
                i += 2
                continue
            if following == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2 : end]
                    out.append(env[name] if name in env else text[i : end + 1])
                    i = end + 1
                    continue
        out.append(text[i])
        i += 1
    return "".join(out)


# -- quantities and downward API ---------------------------------------------------------------


def quantity(text: str) -> Decimal:
    """A Kubernetes quantity ("250m", "8Gi", "1e3") as an exact number."""
    try:
        return quantities.parse(str(text))
    except ValueError:
        raise ConfigError(f"invalid quantity {text!r}") from None


def resource_value(
    container: Mapping[str, Any], ref: Mapping[str, Any], node_allocatable: Mapping[str, str]
) -> str:
    """resourceFieldRef as the kubelet renders it: limits fall back to the node's allocatable,
    the value is divided by the divisor and rounded up to an integer."""
    which, _, resource = ref["resource"].partition(".")
    if which not in ("limits", "requests") or not resource:
        raise ConfigError(f"unsupported resource {ref['resource']!r}")
    resources = container.get("resources") or {}
    value = (resources.get(which) or {}).get(resource)
    if value is None and which == "requests":
        value = (resources.get("limits") or {}).get(resource)
    if value is None:
        value = node_allocatable.get(resource, "0")
    divisor = quantity(str(ref.get("divisor") or "1"))
    return str(math.ceil(quantity(value) / divisor))


def _labels_file(values: Mapping[str, str]) -> str:
    return "".join(f"{key}={json.dumps(values[key])}\n" for key in sorted(values))


def field_value(pod: Mapping[str, Any], path: str, pod_ip: str, host_ip: str) -> str:
    """fieldRef for env vars and downward API files (the paths the kubelet supports)."""
    meta, spec = pod.get("metadata", {}), pod.get("spec", {})
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "metadata.labels": _labels_file(meta.get("labels") or {}),
        "metadata.annotations": _labels_file(meta.get("annotations") or {}),
    }
    if path in simple:
        return simple[path]
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return (meta.get(match[1]) or {}).get(match[2], "")
    raise ConfigError(f"unsupported fieldRef {path!r}")


# -- environment and command -------------------------------------------------------------------


def _key_of(
    source: Mapping[str, Mapping[str, bytes] | None],
    kind: str,
    namespace: str,
    ref: Mapping[str, Any],
) -> str | None:
    data = source.get(ref["name"])
    optional = bool(ref.get("optional"))
    if data is None:
        if optional:
            return None
        raise ConfigError(f'{kind.lower()} "{ref["name"]}" not found')
    if ref["key"] not in data:
        if optional:
            return None
        raise ConfigError(f"couldn't find key {ref['key']} in {kind} {namespace}/{ref['name']}")
    return data[ref["key"]].decode(errors="replace")


def kubernetes_service_env(server: str) -> dict[str, str]:
    """What a kubelet gives every container for the `kubernetes` Service (in-cluster clients
    find the API server by it), pointing at the API server's own loopback address ("HOST:PORT"):
    Services do not route on this machine."""
    host, _, port = server.rpartition(":")
    tcp = f"KUBERNETES_PORT_{port}_TCP"
    return {
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": port,
        "KUBERNETES_SERVICE_PORT_HTTPS": port,
        "KUBERNETES_PORT": f"tcp://{host}:{port}",
        tcp: f"tcp://{host}:{port}",
        f"{tcp}_PROTO": "tcp",
        f"{tcp}_PORT": port,
        f"{tcp}_ADDR": host,
    }


def container_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    image: LocalImage,
    objects: Objects,
    pod_ip: str,
    host_ip: str,
    node_allocatable: Mapping[str, str],
    services: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The process environment: image ENV, HOSTNAME, the Services' variables, then envFrom and
    env in order, values expanded against what came before."""
    namespace = pod["metadata"].get("namespace", "")
    env = {**image.env(), "HOSTNAME": hostname(pod), **(services or {})}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        kind, ref = (
            ("Secret", source["secretRef"])
            if "secretRef" in source
            else ("ConfigMap", source.get("configMapRef") or {})
        )
        data = (objects.secrets if kind == "Secret" else objects.config_maps).get(
            ref.get("name", "")
        )
        if data is None:
            if ref.get("optional"):
                continue
            raise ConfigError(f'{kind.lower()} "{ref.get("name")}" not found')
        for key in sorted(data):
            if _ENV_NAME.match(prefix + key):
                env[prefix + key] = data[key].decode(errors="replace")
    for var in container.get("env") or []:
        name, source = var["name"], var.get("valueFrom")
        if source is None:
            env[name] = expand(var.get("value", ""), env)
        elif "fieldRef" in source:
            env[name] = field_value(pod, source["fieldRef"]["fieldPath"], pod_ip, host_ip)
        elif "resourceFieldRef" in source:
            env[name] = resource_value(container, source["resourceFieldRef"], node_allocatable)
        else:
            kind, ref = (
                ("Secret", source["secretKeyRef"])
                if "secretKeyRef" in source
                else ("ConfigMap", source["configMapKeyRef"])
            )
            value = _key_of(
                objects.secrets if kind == "Secret" else objects.config_maps, kind, namespace, ref
            )
            if value is not None:
                env[name] = value
    return env


def container_argv(
    container: Mapping[str, Any], image: LocalImage, env: Mapping[str, str]
) -> list[str]:
    """command/args against the image's CMD (these images have no ENTRYPOINT), $(VAR) expanded."""
    command, args = container.get("command") or [], container.get("args") or []
    argv = list(command) + list(args) if command else list(args or image.cmd)
    if not argv:
        raise ConfigError("no command specified")
    return [expand(a, env) for a in argv]


def listen_on_pod_ip(env: Mapping[str, str], pod_ip: str) -> dict[str, str]:
    """Pods share this machine's network: a server told to listen on every address (KubeSpawner's
    JUPYTERHUB_SERVICE_URL says 0.0.0.0) listens on the pod IP instead, so pods do not collide."""
    out = dict(env)
    url = env.get("JUPYTERHUB_SERVICE_URL")
    if url:
        match = re.fullmatch(r"(https?://)(\[[^\]]*\]|[^/:]*)(.*)", url)
        if match and match[2] in _WILDCARD_HOSTS:
            out["JUPYTERHUB_SERVICE_URL"] = f"{match[1]}{pod_ip}{match[3]}"
    return out


def hostname(pod: Mapping[str, Any]) -> str:
    return (pod.get("spec", {}).get("hostname") or pod["metadata"]["name"])[:63]


def container_user(
    pod: Mapping[str, Any], container: Mapping[str, Any], image: LocalImage
) -> tuple[int, int, list[int]]:
    """(uid, gid, supplementary groups) of the process: container securityContext, then the
    pod's, then the image's user; fsGroup and supplementalGroups join the groups. Root is refused:
    the sandbox's user namespace would leave it capabilities over the host folders it shows."""
    pod_ctx = pod.get("spec", {}).get("securityContext") or {}
    ctx = container.get("securityContext") or {}
    uid = ctx.get("runAsUser", pod_ctx.get("runAsUser", image.uid))
    gid = ctx.get("runAsGroup", pod_ctx.get("runAsGroup", image.gid))
    if uid == 0 and ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")):
        raise ConfigError(
            f"container has runAsNonRoot and image will run as root "
            f"(pod: {pod['metadata']['name']}, container: {container['name']})"
        )
    if uid == 0:
        raise ConfigError("the dev cluster's pod runner does not run containers as root")
    extra = [pod_ctx["fsGroup"]] if "fsGroup" in pod_ctx else []
    groups = sorted({int(g) for g in [*extra, *(pod_ctx.get("supplementalGroups") or [])]})
    return int(uid), int(gid), groups


# -- volumes ------------------------------------------------------------------------------------


def references(pod: Mapping[str, Any]) -> tuple[set[str], set[str], set[str]]:
    """(secrets, configMaps, claims) the pod's containers and volumes name: what to fetch."""
    secrets: set[str] = set()
    config_maps: set[str] = set()
    claims: set[str] = set()
    spec = pod.get("spec", {})
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for source in container.get("envFrom") or []:
            (secrets if "secretRef" in source else config_maps).add(
                (source.get("secretRef") or source.get("configMapRef") or {}).get("name", "")
            )
        for var in container.get("env") or []:
            value_from = var.get("valueFrom") or {}
            if "secretKeyRef" in value_from:
                secrets.add(value_from["secretKeyRef"]["name"])
            if "configMapKeyRef" in value_from:
                config_maps.add(value_from["configMapKeyRef"]["name"])
    for volume in spec.get("volumes") or []:
        if "secret" in volume:
            secrets.add(volume["secret"]["secretName"])
        elif "configMap" in volume:
            config_maps.add(volume["configMap"]["name"])
        elif "persistentVolumeClaim" in volume:
            claims.add(volume["persistentVolumeClaim"]["claimName"])
        elif "ephemeral" in volume:
            claims.add(f"{pod['metadata']['name']}-{volume['name']}")
        for source in (volume.get("projected") or {}).get("sources") or []:
            if "secret" in source:
                secrets.add(source["secret"]["name"])
            if "configMap" in source:
                config_maps.add(source["configMap"]["name"])
    return secrets, config_maps, claims


def token_audiences(pod: Mapping[str, Any]) -> dict[str, int]:
    """Service account tokens the pod's projected volumes ask for: audience -> lifetime."""
    wanted: dict[str, int] = {}
    for volume in pod.get("spec", {}).get("volumes") or []:
        for source in (volume.get("projected") or {}).get("sources") or []:
            ref = source.get("serviceAccountToken")
            if ref is not None:
                wanted.setdefault(ref.get("audience", ""), ref.get("expirationSeconds", 3607))
    return wanted


def claim_path(
    claim: Mapping[str, Any] | None, volume: Mapping[str, Any] | None
) -> tuple[str, bool]:
    """(host directory, read-only) behind a PVC: its bound PV's hostPath or local path."""
    if claim is None:
        raise MountError("persistentvolumeclaim not found")
    if claim.get("status", {}).get("phase") != "Bound" or volume is None:
        raise MountError(f'persistentvolumeclaim "{claim["metadata"]["name"]}" is not bound')
    spec = volume.get("spec", {})
    path = (spec.get("hostPath") or spec.get("local") or {}).get("path")
    if not path:
        raise MountError(
            f'persistentvolume "{volume["metadata"]["name"]}": only hostPath and local '
            "volumes exist on this machine"
        )
    modes = spec.get("accessModes") or []
    return path, modes == ["ReadOnlyMany"]


def _keyed_files(
    data: Mapping[str, bytes],
    items: list[Mapping[str, Any]] | None,
    mode: int,
    what: str,
    optional: bool,
) -> dict[str, tuple[bytes, int]]:
    if not items:
        return {key: (value, mode) for key, value in data.items()}
    files = {}
    for item in items:
        if item["key"] not in data:
            if optional:
                continue
            raise MountError(f"configmap/secret {what}: key {item['key']!r} not found")
        files[item["path"]] = (data[item["key"]], item.get("mode", mode))
    return files


def _object_files(
    kind: str, data: Mapping[str, bytes] | None, ref: Mapping[str, Any], name: str, mode: int
) -> dict[str, tuple[bytes, int]]:
    if data is None:
        if ref.get("optional"):
            return {}
        raise MountError(f'{kind} "{name}" not found')
    return _keyed_files(data, ref.get("items"), mode, name, bool(ref.get("optional")))


def _downward_files(
    pod: Mapping[str, Any],
    items: Iterable[Mapping[str, Any]],
    mode: int,
    pod_ip: str,
    host_ip: str,
    node_allocatable: Mapping[str, str],
) -> dict[str, tuple[bytes, int]]:
    files = {}
    containers = {c["name"]: c for c in pod["spec"].get("containers") or []}
    for item in items:
        if "fieldRef" in item:
            value = field_value(pod, item["fieldRef"]["fieldPath"], pod_ip, host_ip)
        else:
            ref = item["resourceFieldRef"]
            value = resource_value(
                containers.get(ref.get("containerName", ""), {}), ref, node_allocatable
            )
        files[item["path"]] = (value.encode(), item.get("mode", mode))
    return files


def _claim_volume(
    pod: Mapping[str, Any], volume: Mapping[str, Any], objects: Objects, local: str
) -> Volume:
    """A claim's volume at its PV's path, read-only if the PV or the pod says so; an ephemeral
    volume without a bound claim is an empty folder in the pod's folder instead."""
    name = volume["name"]
    claim_name = (
        volume["persistentVolumeClaim"]["claimName"]
        if "persistentVolumeClaim" in volume
        else f"{pod['metadata']['name']}-{name}"
    )
    found = objects.claims.get(claim_name, "persistentvolumeclaim not found")
    if isinstance(found, str):
        if "ephemeral" in volume:
            return Volume(local)
        raise MountError(f"volume {name!r}: {found}")
    path, read_only = found
    read_only = read_only or bool((volume.get("persistentVolumeClaim") or {}).get("readOnly"))
    return Volume(path, read_only)


def _object_volume(volume: Mapping[str, Any], objects: Objects, local: str) -> Volume:
    """A secret or configMap volume: its keys as read-only files in the pod's folder."""
    kind = "secret" if "secret" in volume else "configmap"
    ref = volume.get("secret") or volume["configMap"]
    ref_name = ref.get("secretName") or ref.get("name", "")
    data = (objects.secrets if kind == "secret" else objects.config_maps).get(ref_name)
    files = _object_files(kind, data, ref, ref_name, ref.get("defaultMode", DEFAULT_FILE_MODE))
    return Volume(local, True, files)


def pod_volumes(
    pod: Mapping[str, Any],
    objects: Objects,
    pod_dir: str,
    pod_ip: str,
    host_ip: str,
    node_allocatable: Mapping[str, str],
) -> dict[str, Volume]:
    """Each pod volume on this machine: claims at their PV's path, emptyDir (and ephemeral
    volumes without a bound claim) in the pod's folder, secret-like volumes as files there."""
    volumes = {}
    for volume in pod["spec"].get("volumes") or []:
        name = volume["name"]
        local = posixpath.join(pod_dir, "volumes", name)
        if "emptyDir" in volume:
            volumes[name] = Volume(local)
        elif "persistentVolumeClaim" in volume or "ephemeral" in volume:
            volumes[name] = _claim_volume(pod, volume, objects, local)
        elif "secret" in volume or "configMap" in volume:
            volumes[name] = _object_volume(volume, objects, local)
        elif "downwardAPI" in volume:
            spec = volume["downwardAPI"]
            files = _downward_files(
                pod,
                spec.get("items") or [],
                spec.get("defaultMode", DEFAULT_FILE_MODE),
                pod_ip,
                host_ip,
                node_allocatable,
            )
            volumes[name] = Volume(local, True, files)
        elif "projected" in volume:
            volumes[name] = Volume(
                local,
                True,
                _projected_files(pod, volume, objects, pod_ip, host_ip, node_allocatable),
            )
        else:
            kinds = ", ".join(sorted(set(volume) - {"name"}))
            volumes[name] = Volume(
                local,
                stand_in=f"volume {name!r}: {kinds} volumes do not exist on this "
                "machine; an empty folder stands in",
            )
    return volumes


def _projected_files(
    pod: Mapping[str, Any],
    volume: Mapping[str, Any],
    objects: Objects,
    pod_ip: str,
    host_ip: str,
    node_allocatable: Mapping[str, str],
) -> dict[str, tuple[bytes, int]]:
    spec = volume["projected"]
    mode = spec.get("defaultMode", DEFAULT_FILE_MODE)
    files: dict[str, tuple[bytes, int]] = {}
    for source in spec.get("sources") or []:
        if "secret" in source:
            ref = source["secret"]
            files.update(
                _object_files("secret", objects.secrets.get(ref["name"]), ref, ref["name"], mode)
            )
        elif "configMap" in source:
            ref = source["configMap"]
            files.update(
                _object_files(
                    "configmap", objects.config_maps.get(ref["name"]), ref, ref["name"], mode
                )
            )
        elif "downwardAPI" in source:
            files.update(
                _downward_files(
                    pod,
                    source["downwardAPI"].get("items") or [],
                    mode,
                    pod_ip,
                    host_ip,
                    node_allocatable,
                )
            )
        elif "serviceAccountToken" in source:
            ref = source["serviceAccountToken"]
            token = objects.tokens.get(ref.get("audience", ""))
            if token is None:
                raise MountError(f"volume {volume['name']!r}: no service account token issued yet")
            files[ref["path"]] = (token.encode(), mode)
        else:
            raise MountError(
                f"volume {volume['name']!r}: projected {', '.join(sorted(source))} is not "
                "supported by the pod runner"
            )
    return files


def _safe_relative(path: str, what: str) -> str:
    if path.startswith("/") or ".." in path.split("/"):
        raise ConfigError(f"{what} {path!r} must be a relative path without '..'")
    return path


def container_mounts(
    container: Mapping[str, Any], volumes: Mapping[str, Volume], env: Mapping[str, str]
) -> list[Mount]:
    """volumeMounts as bind mounts: subPath (and subPathExpr against the env) within the volume,
    read-only when the mount or the volume says so."""
    mounts = []
    for mount in container.get("volumeMounts") or []:
        volume = volumes.get(mount["name"])
        if volume is None:
            raise ConfigError(f"volume {mount['name']!r} is not in the pod's volumes")
        sub = mount.get("subPath") or (
            expand(mount["subPathExpr"], env) if mount.get("subPathExpr") else ""
        )
        source = volume.path
        is_file = False
        if sub:
            sub = _safe_relative(sub, "subPath")
            source = posixpath.join(volume.path, sub)
            is_file = volume.files is not None and sub in volume.files
        mounts.append(
            Mount(
                source,
                posixpath.normpath(mount["mountPath"]),
                bool(mount.get("readOnly")) or volume.read_only,
                is_file,
            )
        )
    return mounts


# -- the sandbox's /etc --------------------------------------------------------------------------


def etc_passwd(host: str, image: LocalImage) -> str:
    """The host's users with the image's user in place of any entry of the same name or uid."""
    keep = [line for line in host.splitlines() if line and not _names(line, image.user, image.uid)]
    return (
        "\n".join([*keep, f"{image.user}:x:{image.uid}:{image.gid}::{image.home}:/bin/bash"]) + "\n"
    )


def etc_group(host: str, image: LocalImage) -> str:
    """The host's groups, plus the image user's primary group if the host has no such gid."""
    lines = [line for line in host.splitlines() if line]
    if not any(line.split(":")[2:3] == [str(image.gid)] for line in lines):
        lines.append(f"{image.group}:x:{image.gid}:")
    return "\n".join(lines) + "\n"


def _names(line: str, user: str, uid: int) -> bool:
    parts = line.split(":")
    return parts[0] == user or parts[2:3] == [str(uid)]


def etc_profile(host: str, path: str) -> str:
    """The host's /etc/profile, then the container's PATH again: a distribution's profile may
    reset PATH for login shells (Jupyter terminals are), which would hide the environment."""
    return (
        f"{host.rstrip()}\n\n# The container's PATH (dev cluster pod runner).\n"
        f"export PATH={shlex.quote(path)}\n"
    )


def etc_hosts(pod_ip: str, name: str) -> str:
    """What the kubelet writes into every container's /etc/hosts."""
    return (
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        f"{pod_ip}\t{name}\n"
    )


def base_python_dirs(pyvenv_cfg: str) -> list[str]:
    """The Python installation a virtualenv runs on (pyvenv.cfg `home` is its bin folder)."""
    for line in pyvenv_cfg.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "home" and value.strip():
            return [posixpath.dirname(value.strip().rstrip("/"))]
    return []


def host_paths(extra: Iterable[str]) -> list[str]:
    """Host folders the sandbox shows read-only: the system's and the environments', without
    any folder already inside another."""
    paths = sorted({posixpath.normpath(p) for p in (*SYSTEM_PATHS, *extra)})
    return [
        p for p in paths if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in paths)
    ]


def folders_on_the_way(host_paths: Iterable[str], targets: Iterable[str]) -> list[str]:
    """The folders from a shown host folder down to each target's parent: what
    split_host_paths needs listed (those that exist)."""
    folders: list[str] = []
    for target in targets:
        for top in host_paths:
            if target.startswith(top.rstrip("/") + "/"):
                parts = target[len(top.rstrip("/")) + 1 :].split("/")[:-1]
                folders += [posixpath.join(top, *parts[:i]) for i in range(len(parts) + 1)]
    return sorted(set(folders))


def split_host_paths(
    host_paths: Iterable[str], targets: Iterable[str], listing: Mapping[str, Mapping[str, str]]
) -> tuple[list[str], list[Mount]]:
    """(host folders to show, host files to bind read-only) so that no target lies inside a
    shown host folder, where no mount point can be made (it is read-only): a folder holding a
    target is shown entry by entry instead, down to the target's parent, which becomes the
    container root's own. `listing`: host folder -> {entry: "dir", "file" or "link"}, the
    entries not every user may read left out; a folder missing from it does not exist."""
    shown = set(host_paths)
    files: list[Mount] = []
    for target in targets:
        holder = next((p for p in sorted(shown) if target.startswith(p.rstrip("/") + "/")), None)
        while holder is not None and holder in listing:
            shown.discard(holder)
            step = target[len(holder.rstrip("/")) + 1 :].split("/")[0]
            for name, kind in sorted(listing[holder].items()):
                path = posixpath.join(holder, name)
                if name == step:
                    continue
                if kind == "file":
                    files.append(Mount(path, path, True, True))
                else:
                    shown.add(path)
            below = posixpath.join(holder, step)
            holder = below if below != target and listing[holder].get(step) == "dir" else None
    return sorted(shown), files


def decode_data(obj: Mapping[str, Any], secret: bool) -> dict[str, bytes]:
    """A Secret's or ConfigMap's data as bytes (Secret data and binaryData are base64)."""
    out = {k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()}
    data = obj.get("data") or {}
    out.update({k: base64.b64decode(v) if secret else v.encode() for k, v in data.items()})
    return out


def pick_pod_ip(cidr: str, in_use: Iterable[str]) -> str:
    """The highest free address of the node's pod range: kwok hands them out from the bottom,
    so runner pods and simulated pods do not meet unless a node holds ~half its range."""
    network = ipaddress.ip_network(cidr)
    used = set(in_use)
    first, last = int(network.network_address) + 1, int(network.broadcast_address) - 1
    for value in range(last, max(first, last - 4096) - 1, -1):
        address = str(ipaddress.ip_address(value))
        if address not in used:
            return address
    raise MountError(f"no free pod IP left in {cidr}")
