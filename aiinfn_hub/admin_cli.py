"""`aiinfn-hub`: the admins' command. Each subcommand lives in its own module, which registers
its arguments (`add_arguments(parser)`) and runs it (`run(args) -> exit status`):

- `aiinfn-hub check`: the catalog, the policies and the cluster the hub runs on (checks.py);
- `aiinfn-hub render`: the per-project cluster objects generated from the catalog (render.py).
- `aiinfn-hub config-reference`: the configuration reference, docs/config.md (config_reference.py).
- `aiinfn-hub quota`: GPU-hour quotas, shown, raised or reset (accounting/quota_cli.py).
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = {
    "check": ("aiinfn_hub.checks", "check the configuration and the cluster the hub runs on"),
    "render": ("aiinfn_hub.render", "print the per-project cluster objects made from the catalog"),
    "config-reference": (
        "aiinfn_hub.config_reference",
        "print the configuration reference (docs/config.md)",
    ),
    "quota": (
        "aiinfn_hub.accounting.quota_cli",
        "show GPU-hour quotas, raise or reset one for a user or a project (docs/accounting.md)",
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="aiinfn-hub", description="aiinfn-hub administration commands"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, summary) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        module.add_arguments(sub.add_parser(name, help=summary, description=summary))
    args = parser.parse_args(argv)
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    return module.run(args)


if __name__ == "__main__":
    sys.exit(main())
