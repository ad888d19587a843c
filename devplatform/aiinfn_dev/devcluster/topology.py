"""Cluster topologies as data: YAML files -> Node manifests for kwok to play.

Pure: loading and expanding never touch the API server. Every node gets its own /24 pod range
inside 127.64.0.0/14 so pod IPs stay on the loopback interface.
"""

from __future__ import annotations

import copy
import ipaddress
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
TOPOLOGY_LABEL = "aiinfn.infn.it/devcluster-topology"
SERVER_LABEL = "aiinfn.infn.it/server"
POD_NETWORK = ipaddress.ip_network("127.64.0.0/14")
NODE_FIELDS = {
    "name",
    "template",
    "server",
    "cpu",
    "memory",
    "pods",
    "labels",
    "resources",
    "taints",
}


class TopologyError(ValueError):
    """The topology file is malformed; the message names the node and field."""


def builtin_names() -> list[str]:
    """Names of the topologies shipped with the package (file stems)."""
    folder = resources.files(__package__) / "topologies"
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def load(name_or_path: str) -> tuple[str, dict[str, Any]]:
    """Return (name, parsed YAML) for a built-in topology name or a path to a YAML file."""
    if name_or_path in builtin_names():
        text = (resources.files(__package__) / "topologies" / f"{name_or_path}.yaml").read_text()
        return name_or_path, yaml.safe_load(text)
    path = Path(name_or_path)
    if not path.is_file():
        raise TopologyError(
            f"unknown topology {name_or_path!r}: "
            f"use one of {', '.join(builtin_names())} or a YAML file path"
        )
    return path.stem, yaml.safe_load(path.read_text())


def _merged(template: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(template)
    for key, value in node.items():
        if key in ("labels", "resources") and isinstance(value, dict):
            merged[key] = {**merged.get(key, {}), **value}
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def expand(topology: dict[str, Any]) -> list[dict[str, Any]]:
    """Flatten `nodes` and `generate` entries into node specs with templates applied."""
    templates = topology.get("templates") or {}
    specs = []
    for entry in topology.get("nodes") or []:
        template = templates.get(entry.get("template"), {}) if entry.get("template") else {}
        if entry.get("template") and entry["template"] not in templates:
            raise TopologyError(
                f"node {entry.get('name')!r}: unknown template {entry['template']!r}"
            )
        specs.append(_merged(template, entry))
    for rule in topology.get("generate") or []:
        if rule.get("template") not in templates:
            raise TopologyError(
                f"generate {rule.get('prefix')!r}: unknown template {rule.get('template')!r}"
            )
        for index in range(int(rule["count"])):
            specs.append(
                _merged(templates[rule["template"]], {"name": f"{rule['prefix']}-{index}"})
            )
    names = [s.get("name") for s in specs]
    for spec in specs:
        unknown = set(spec) - NODE_FIELDS
        if unknown:
            raise TopologyError(f"node {spec.get('name')!r}: unknown fields {sorted(unknown)}")
        if not spec.get("name") or names.count(spec["name"]) > 1:
            raise TopologyError(f"node name {spec.get('name')!r} is missing or repeated")
    return specs


def pod_cidr(index: int) -> str:
    """The loopback /24 for the index-th node."""
    subnets = 2 ** (24 - POD_NETWORK.prefixlen)
    if index >= subnets:
        raise TopologyError(f"at most {subnets} nodes fit in {POD_NETWORK}")
    return str(ipaddress.ip_network((int(POD_NETWORK.network_address) + (index << 8), 24)))


def node_manifest(spec: dict[str, Any], index: int, topology_name: str) -> dict[str, Any]:
    """A v1 Node with status, created as-is (status is settable on create) and played by kwok."""
    allocatable = {
        "cpu": str(spec.get("cpu", "8")),
        "memory": str(spec.get("memory", "32Gi")),
        "pods": str(spec.get("pods", "110")),
        **{k: str(v) for k, v in (spec.get("resources") or {}).items()},
    }
    labels = {
        "kubernetes.io/hostname": spec["name"],
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        TOPOLOGY_LABEL: topology_name,
        **({SERVER_LABEL: spec["server"]} if spec.get("server") else {}),
        **{k: str(v) for k, v in (spec.get("labels") or {}).items()},
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": spec["name"],
            "labels": labels,
            "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {
            "podCIDR": pod_cidr(index),
            "podCIDRs": [pod_cidr(index)],
            "taints": copy.deepcopy(spec.get("taints") or []),
        },
        "status": {"allocatable": allocatable, "capacity": dict(allocatable)},
    }


def node_manifests(name_or_path: str) -> list[dict[str, Any]]:
    """All Node manifests of a topology, in file order."""
    name, topology = load(name_or_path)
    return [node_manifest(spec, i, name) for i, spec in enumerate(expand(topology))]


async def ensure_nodes(core_api, name_or_path: str) -> int:
    """Create the topology's nodes that an existing cluster lacks (for AIINFN_KUBECONFIG);
    return how many were created. core_api is a kubernetes_asyncio CoreV1Api."""
    existing = {n.metadata.name for n in (await core_api.list_node()).items}
    created = 0
    for manifest in node_manifests(name_or_path):
        if manifest["metadata"]["name"] not in existing:
            await core_api.create_node(manifest)
            created += 1
    return created
