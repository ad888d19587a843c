"""The storage exporter: bytes and files per home and project folder for Prometheus.

`python -m aiinfn_hub.storage_exporter --homes /export/home --projects /export/projects`
serves /metrics (docs/monitoring.md, "Storage"). A background thread walks one folder at a time
(storage_usage.walk) at a bounded number of entries a second and publishes each folder's numbers
when its walk completes, with the time it completed; a scrape only copies what is published, so
its cost depends on the number of folders, never on the number of files. A folder gets series
after its first walk (never zeros that look like an empty home); one that is gone loses them at
the next pass.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import storage_usage
from .storage_usage import Budget, Folder, Usage, WalkStopped

log = logging.getLogger("aiinfn.storage_exporter")

_USAGE_HELP = {
    "bytes": "Apparent size in bytes of the regular files in each folder (st_size; a file with "
    "several hard links in the folder counted once).",
    "allocated_bytes": "Bytes on disk of the files in each folder (st_blocks * 512).",
    "files": "Entries other than directories in each folder (files, symbolic links; each inode "
    "once).",
    "directories": "Directories below each folder.",
    "errors": "Directories that could not be listed and entries that could not be read in the "
    "folder's last walk (what they hold is not counted).",
}


@dataclass(frozen=True)
class Published:
    """A folder's numbers from its last complete walk."""

    usage: Usage
    finished: float  # Unix time the walk completed
    duration: float  # seconds it took


class Walker:
    """Walks the folders under `roots` (kind -> root) pass after pass, at most `rate` entries a
    second, a pass at most every `interval` seconds; `published()` is what a scrape reads."""

    def __init__(self, roots: Mapping[str, Path], rate: float, interval: float) -> None:
        self.roots = dict(roots)
        self.interval = interval
        self.stopping = threading.Event()
        self.budget = Budget(rate, self.stopping.wait)
        self.lock = threading.Lock()
        self._published: dict[tuple[str, str], Published] = {}
        self.passes = 0
        self.last_pass: float | None = None
        self.last_pass_duration = 0.0

    def published(self) -> dict[tuple[str, str], Published]:
        with self.lock:
            return dict(self._published)

    def run(self) -> None:
        """Passes until stopped (the thread's target)."""
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                self.one_pass()
            except WalkStopped:
                return
            except OSError:
                log.exception("storage pass failed (a root could not be listed); retrying")
            self.stopping.wait(max(self.interval - (time.monotonic() - started), 1.0))

    def one_pass(self) -> None:
        """List the folders, drop the series of those gone, walk each and publish it."""
        started = time.monotonic()
        found = storage_usage.folders(self.roots)
        self.budget.restart()  # a pass starts paced from here: waiting earned no burst
        current = {(f.kind, f.name) for f in found}
        with self.lock:
            self._published = {k: v for k, v in self._published.items() if k in current}
        for folder in found:
            self._walk(folder)
        with self.lock:
            self.passes += 1
            self.last_pass = time.time()
            self.last_pass_duration = time.monotonic() - started

    def _walk(self, folder: Folder) -> None:
        started = time.monotonic()
        try:
            usage = storage_usage.walk(folder.path, self.budget)
        except FileNotFoundError:
            return  # removed since the listing
        published = Published(usage, time.time(), time.monotonic() - started)
        with self.lock:
            self._published[folder.kind, folder.name] = published

    def entries(self) -> int:
        return self.budget.total


class StorageCollector(Collector):
    """The walker's published numbers, copied at each scrape."""

    def __init__(self, walker: Walker) -> None:
        self.walker = walker

    def collect(self) -> Iterator[Metric]:
        published = self.walker.published()
        labels = ["kind", "name"]
        families = [
            GaugeMetricFamily(f"aiinfn_storage_{name}", text, labels=labels)
            for name, text in _USAGE_HELP.items()
        ]
        finished = GaugeMetricFamily(
            "aiinfn_storage_walk_timestamp_seconds",
            "Unix time the last complete walk of each folder ended: the age of its numbers.",
            labels=labels,
        )
        duration = GaugeMetricFamily(
            "aiinfn_storage_walk_duration_seconds",
            "How long the last complete walk of each folder took.",
            labels=labels,
        )
        for (kind, name), folder in sorted(published.items()):
            for family, value in zip(families, astuple(folder.usage), strict=True):
                family.add_metric([kind, name], value)
            finished.add_metric([kind, name], folder.finished)
            duration.add_metric([kind, name], folder.duration)
        yield from (*families, finished, duration)
        yield from self._walker_metrics()

    def _walker_metrics(self) -> Iterator[Metric]:
        walker = self.walker
        yield CounterMetricFamily(
            "aiinfn_storage_walker_entries",
            "Entries the walker has read (one lstat each).",
            value=walker.entries(),
        )
        yield CounterMetricFamily(
            "aiinfn_storage_walker_passes",
            "Complete passes over every folder.",
            value=walker.passes,
        )
        yield GaugeMetricFamily(
            "aiinfn_storage_walker_rate_limit",
            "Entries a second the walker may read (0: no limit).",
            value=walker.budget.rate,
        )
        if walker.last_pass is not None:
            yield GaugeMetricFamily(
                "aiinfn_storage_walker_last_pass_timestamp_seconds",
                "Unix time the last complete pass ended.",
                value=walker.last_pass,
            )
            yield GaugeMetricFamily(
                "aiinfn_storage_walker_last_pass_duration_seconds",
                "How long the last complete pass took (compare with --interval).",
                value=walker.last_pass_duration,
            )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m aiinfn_hub.storage_exporter",
        description="Serve bytes and files per home and project folder at /metrics.",
    )
    parser.add_argument("--homes", type=Path, help="the root of the homes (/export/home)")
    parser.add_argument("--projects", type=Path, help="the root of the project folders")
    parser.add_argument("--address", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=9731, help="port to listen on")
    parser.add_argument(
        "--rate", type=float, default=5000, help="entries read a second at most (0: no limit)"
    )
    parser.add_argument(
        "--interval", type=float, default=900, help="seconds from the start of a pass to the next"
    )
    args = parser.parse_args(argv)
    if args.homes is None and args.projects is None:
        parser.error("give --homes, --projects or both")
    if args.rate < 0 or args.interval < 0:
        parser.error("--rate and --interval must not be negative")
    return args


def serve(args: argparse.Namespace) -> None:
    """Serve until SIGTERM or SIGINT, then stop the walker and the server."""
    roots = {"home": args.homes, "project": args.projects}
    walker = Walker({k: v for k, v in roots.items() if v is not None}, args.rate, args.interval)
    registry = CollectorRegistry()
    registry.register(StorageCollector(walker))
    server, server_thread = start_http_server(args.port, args.address, registry=registry)
    walking = threading.Thread(target=walker.run, name="storage walker", daemon=True)
    walking.start()
    log.info("serving /metrics on %s:%s", args.address, args.port)

    def stop(signum: int, frame: Any) -> None:
        walker.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not walker.stopping.wait(1.0):
        pass  # the handlers above end it
    walking.join(timeout=10)
    server.shutdown()
    server_thread.join(timeout=10)


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    serve(parse_args(argv))


if __name__ == "__main__":
    main()
