"""`aiinfn envs list|publish|clone`: software environments from the notebook terminal.

Works on the file system directly (no service): /envs is writable only for the curators'
group, so `publish` fails with a permission error for everyone else; clones go to ~/envs.
$AIINFN_ENVS_ROOT and $AIINFN_USER_ENVS name other folders (as the kernel spec manager's
managed_root and user_root do).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import build, kernelspecs, layout, specs
from .layout import Environment, LayoutError


def roots(env: Mapping[str, str]) -> dict[str, Path]:
    """The folders of the managed environments and of the user's own."""
    user = env.get("AIINFN_USER_ENVS") or os.path.join(env.get("HOME", "~"), "envs")
    return {"managed": Path(env.get("AIINFN_ENVS_ROOT") or "/envs"), "home": Path(user)}


def add_parser(areas: Any) -> None:
    envs = areas.add_parser("envs", help="software environments: list, publish, clone")
    actions = envs.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="the managed environments and your own")
    publish = actions.add_parser("publish", help="curators: build a spec into /envs, or retire")
    what = publish.add_mutually_exclusive_group(required=True)
    what.add_argument("spec", nargs="?", help="the environment's spec (YAML)")
    what.add_argument("--retire", metavar="NAME", help="remove a managed environment's name")
    clone = actions.add_parser("clone", help="your own environment extending a managed one")
    clone.add_argument("source", help="a managed environment's name (or ~/envs/NAME)")
    clone.add_argument("name", help="your environment's name (made in ~/envs)")
    clone.add_argument("--add", nargs="+", default=[], metavar="PKG", help="packages to add")


def _entry(environment: Environment, origin: str) -> dict[str, Any]:
    return {
        "ref": kernelspecs.reference(origin, environment.name),
        "kernel": kernelspecs.kernel_name(origin, environment.name),
        **environment.metadata(),
        "packages": len(environment.packages),
    }


def listing(where: Mapping[str, Path]) -> dict[str, Any]:
    found: list[dict[str, Any]] = []
    problems: list[str] = []
    for origin, root in where.items():
        environments, skipped = layout.scan(root)
        found += [_entry(e, origin) for e in environments]
        problems += skipped
    return {"environments": found, "skipped": problems}


def _source(text: str, where: Mapping[str, Path]) -> Environment:
    origin, name = layout.parse_reference(text) or ("managed", layout.check_name(text))
    try:
        return layout.read(where[origin] / name)
    except FileNotFoundError:
        raise LayoutError(f"no environment {text!r} (see: aiinfn envs list)") from None


def run(args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, Any]:
    where = roots(env)
    if args.action == "list":
        return listing(where)
    if args.action == "clone":
        target = where["home"] / layout.check_name(args.name)
        made = build.clone(_source(args.source, where), target, args.add)
        return _entry(made, "home")
    if args.retire:
        return {"retired": args.retire, "kept": str(build.retire(where["managed"], args.retire))}
    return _entry(build.publish(specs.load(args.spec), where["managed"]), "managed")


def show(result: Mapping[str, Any]) -> None:
    if "retired" in result:
        print(f"retired {result['retired']}; its version stays for clones: {result['kept']}")
        return
    for entry in result.get("environments", [result]):
        print(f"{entry['ref']:<28} {entry['kind']:<9} {entry['display_name']}")
        if entry.get("description"):
            print(f"  {entry['description']}")
    for problem in result.get("skipped", ()):
        print(f"skipped: {problem}", file=sys.stderr)
    if not result.get("environments", [result]):
        print("no environments")


def main(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> int:
    try:
        result = run(args, env)
    except (LayoutError, build.BuildError, OSError) as error:
        print(f"aiinfn: {error}", file=sys.stderr)
        return 1
    if getattr(args, "json", False):
        print(json.dumps(result, indent=2))
    else:
        show(result)
    return 0
