"""Label, annotation and taint keys are named once, in aiinfn_hub/labels.py.

A key spelled in two places drifts (the Kueue queue label once had three names); this test reads
the product's source and fails on a qualified key literal, or a ``labels.PREFIX``-built key,
anywhere but labels.py.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PRODUCT = Path(__file__).resolve().parents[2] / "aiinfn_hub"
QUALIFIED = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?\.[a-z]{2,}/[A-Za-z0-9][A-Za-z0-9._-]*")
API_VERSION = re.compile(r".*/v[0-9]+((alpha|beta)[0-9]+)?")
# Extended resource names are resources, not labels.
RESOURCES = {"nvidia.com/gpu", "xilinx.com/fpga", "amd.com/gpu"}
# Operator-configurable defaults (node labels that device plugins set): data, like the catalog.
CONFIG_DEFAULTS = {
    ("platform_config.py", "nvidia.com/gpu.present"),
    ("platform_config.py", "xilinx.com/fpga.board"),
    ("app.py", "node-role.kubernetes.io/services"),
}


def _prefix_key(node: ast.JoinedStr) -> str | None:
    """``f"{labels.PREFIX}/x"`` as "labels.PREFIX/x"; None for any other f-string."""
    first = node.values[0] if node.values else None
    if (
        isinstance(first, ast.FormattedValue)
        and isinstance(first.value, ast.Attribute)
        and first.value.attr == "PREFIX"
    ):
        rest = "".join(v.value for v in node.values[1:] if isinstance(v, ast.Constant))
        return f"labels.PREFIX{rest}"
    return None


def _keys(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            key = _prefix_key(node)
            if key is not None:
                found.append((node.lineno, key))
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and QUALIFIED.fullmatch(node.value)
            and not API_VERSION.fullmatch(node.value)
            and node.value not in RESOURCES
        ):
            found.append((node.lineno, node.value))
    return found


def _violations() -> list[str]:
    problems = []
    for path in sorted(PRODUCT.rglob("*.py")):
        if path == PRODUCT / "labels.py":
            continue
        for line, key in _keys(ast.parse(path.read_text(encoding="utf-8"))):
            if (path.name, key) not in CONFIG_DEFAULTS:
                problems.append(f"{path.relative_to(PRODUCT)}:{line} {key}")
    return problems


def test_the_scan_sees_literal_and_prefixed_keys():
    tree = ast.parse(
        'A = "kueue.x-k8s.io/queue-name"\nB = f"{labels.PREFIX}/owner"\n'
        'C = "kueue.x-k8s.io/v1beta2"\nD = "nvidia.com/gpu"\nE = "a/b"\n'
    )
    assert _keys(tree) == [(1, "kueue.x-k8s.io/queue-name"), (2, "labels.PREFIX/owner")]


def test_label_keys_are_named_only_in_labels_py():
    assert _violations() == []
