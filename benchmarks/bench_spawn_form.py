"""Spawn-form benchmark: watch-fed inventory vs. listing the cluster on every render.

Side by side, in one run, against the same real kube-apiserver (our own dev cluster, named
"bench", on a free port; the tests' "aiinfn-dev" cluster is never touched):

- ours: `InventoryWatcher` keeps an `Inventory` current; one render is what the spawner does per
  page view: `inventory.snapshot(groups)` -> availability -> `profiles.build` -> `form.render`.
  Every Kubernetes request of the process is counted, and those made from the render path are
  reported (they must be 0).
- baseline (the AI_INFN reference spawner approach): per render, `list_node()` and
  `list_pod_for_all_namespaces()` through kubernetes_asyncio (deserialised into models, as a
  normal client does), count accelerator usage from them, then the same build and render.

At two scales: the AI_INFN farm (topology `ai-infn`, ~200 pods) and a large farm
(`synthetic-1000`, 20,000 pods). Pods are created bound (`spec.nodeName`, no scheduler),
restricted-compliant, concurrently; kwok marks them Running (the cluster's pod runner is off:
this measures the form, not real JupyterLab processes). Also measured: the inventory's memory
(tracemalloc) and the cost of one watch event (apply only, and JSON parse + apply).

Run: .venv/bin/python benchmarks/bench_spawn_form.py [--quick] [--scale small|large|both]
     [--json FILE]
Performance is reported as numbers and ratios against the baseline; nothing here is a test.
The parts live in benchmarks/spawn_form/: settings (scales, targets), pods (the plan), cluster
(the dev cluster and filling it), renders (ours and the baseline), measure (one scale), offline
(memory and watch events with no cluster), report (the markdown).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform as platform_module
import resource as rusage
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from measuring import say  # noqa: E402
from spawn_form.measure import measure_scale  # noqa: E402
from spawn_form.report import markdown  # noqa: E402
from spawn_form.settings import FULL, QUICK  # noqa: E402

from aiinfn_hub import catalog as catalog_module  # noqa: E402


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM runs the finally blocks (cluster.down) as Ctrl-C does."""
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer renders and 5,000 pods at the large scale"
    )
    parser.add_argument("--scale", choices=("small", "large", "both"), default="both")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()

    signal.signal(signal.SIGTERM, _interrupt)
    catalog = catalog_module.load(catalog_module.default_path())
    scales = [s for s in (QUICK if args.quick else FULL) if args.scale in ("both", s.key)]
    say(
        f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, "
        f"Python {platform_module.python_version()}"
    )
    started = time.monotonic()
    results = [asyncio.run(measure_scale(scale, catalog)) for scale in scales]
    peak_rss = rusage.getrusage(rusage.RUSAGE_SELF).ru_maxrss / 2**10
    say(f"done in {time.monotonic() - started:.0f} s; peak RSS of this process {peak_rss:.0f} MB")
    print()
    for result in results:
        print(markdown(result, judged=result["scale"] == "large"))
        print()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
