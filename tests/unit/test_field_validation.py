"""Every write the product sends to the API server asks for strict field validation.

Without ``fieldValidation=Strict`` a misspelled manifest field is silently dropped; this test
keeps the rule by reading the product's source, so a new write without it fails here.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from kubernetes_asyncio import client

PRODUCT = Path(__file__).resolve().parents[2] / "aiinfn_hub"

# Raw or dynamic-client writes: they take ``query_params`` with ("fieldValidation", "Strict").
RAW_WRITES = {
    "call_api",
    "server_side_apply",
    "create_from_yaml_single_item",
    "patch",
    "create",
    "replace",
}
# These share one kwargs dict (and its query_params list) between objects: use k8s.apply_objects.
FORBIDDEN = {"create_from_yaml", "create_from_dict"}


def _typed_writes() -> set[str]:
    """Names of the generated API methods that accept ``field_validation``."""
    found = set()
    for _, api in inspect.getmembers(client, inspect.isclass):
        if not api.__name__.endswith("Api"):
            continue
        for name, method in inspect.getmembers(api, inspect.isfunction):
            if ":param field_validation:" in (method.__doc__ or ""):
                found.add(name)
    return found


def _keywords(call: ast.Call) -> set[str]:
    return {k.arg for k in call.keywords if k.arg}


def _violations() -> list[str]:
    typed = _typed_writes()
    problems = []
    for path in sorted(PRODUCT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            name = node.func.attr
            where = f"{path.relative_to(PRODUCT)}:{node.lineno} {name}"
            if name in FORBIDDEN:
                problems.append(f"{where} (use k8s.apply_objects)")
            elif name in typed and "field_validation" not in _keywords(node):
                problems.append(f"{where} lacks field_validation=k8s.STRICT")
            elif (
                name in RAW_WRITES and _is_api_call(node) and "query_params" not in _keywords(node)
            ):
                problems.append(f"{where} lacks query_params with fieldValidation")
    return problems


def _is_api_call(node: ast.Call) -> bool:
    """Dynamic-client style calls take ``body=``; str.replace, dict methods and the like do not."""
    return node.func.attr in {
        "call_api",
        "server_side_apply",
        "create_from_yaml_single_item",
    } or "body" in _keywords(node)


def test_typed_write_methods_are_found():
    """The introspection sees the methods the product uses (else the guard would pass vacuously)."""
    typed = _typed_writes()
    assert {
        "create_namespaced_secret",
        "replace_namespaced_config_map",
        "create_namespaced_job",
        "patch_namespaced_config_map",
    } <= typed
    assert "read_namespaced_secret" not in typed


def test_every_product_write_is_strict():
    assert _violations() == []
