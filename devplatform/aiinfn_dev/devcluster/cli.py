"""`aiinfn-devcluster up|down|status|kubeconfig|build`: the local control plane from a shell."""

from __future__ import annotations

import argparse
import os
import sys

from . import build, versions
from .cluster import DEFAULT_NAME, DEFAULT_PORT, DEFAULT_TOPOLOGY, DevCluster
from .errors import DevClusterError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aiinfn-devcluster",
        description="A real local Kubernetes control plane (etcd, kube-apiserver, "
        "controller-manager, scheduler) with kwok playing the AI_INFN farm's nodes.",
    )
    parser.add_argument(
        "--name",
        default=os.environ.get("AIINFN_DEVCLUSTER_NAME", DEFAULT_NAME),
        help="cluster name (default %(default)s; env AIINFN_DEVCLUSTER_NAME)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser(
        "up", help="start the cluster (building it first if needed) or reuse a running one"
    )
    up.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("AIINFN_DEVCLUSTER_PORT", DEFAULT_PORT)),
        help="kube-apiserver port on 127.0.0.1 (default %(default)s; env AIINFN_DEVCLUSTER_PORT)",
    )
    up.add_argument(
        "--topology",
        default=DEFAULT_TOPOLOGY,
        help="built-in topology (ai-infn, synthetic-1000) or a YAML file (default %(default)s)",
    )
    up.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for readiness")
    up.add_argument(
        "--no-pod-runner",
        dest="pod_runner",
        action="store_false",
        help="simulate every pod with kwok, even those whose image is a catalog environment "
        "(by default they run as local processes: docs/devcluster.md, Pod runner)",
    )
    sub.add_parser("down", help="stop every process of the cluster by pid and remove its state")
    sub.add_parser("status", help="say whether the cluster runs, where, and its pids")
    sub.add_parser("kubeconfig", help="print the admin kubeconfig path (for KUBECONFIG=...)")
    sub.add_parser("build", help="build the binaries into the cache without starting anything")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    log = lambda message: print(f"aiinfn-devcluster: {message}", file=sys.stderr)  # noqa: E731
    try:
        if args.command == "build":
            build.build(versions.cache_dir(), log=log)
            return 0
        cluster = DevCluster(
            name=args.name,
            port=getattr(args, "port", DEFAULT_PORT),
            topology_name=getattr(args, "topology", DEFAULT_TOPOLOGY),
            log=log,
            pod_runner=getattr(args, "pod_runner", True),
        )
        if args.command == "up":
            started = cluster.up(timeout=args.timeout)
            if not started:
                log(f"already running; reusing it. {cluster.status().describe()}")
            print(cluster.layout.admin_kubeconfig)
        elif args.command == "down":
            log("stopped" if cluster.down() else "nothing was running")
        elif args.command == "status":
            status = cluster.status()
            print(status.describe())
            return 0 if status.state == "running" else 3
        elif args.command == "kubeconfig":
            status = cluster.status()
            if status.state != "running":
                raise DevClusterError(f"{status.describe()}: start it with `aiinfn-devcluster up`")
            print(status.kubeconfig)
    except DevClusterError as error:
        print(f"aiinfn-devcluster: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "aiinfn-devcluster: interrupted; processes started so far were stopped", file=sys.stderr
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
