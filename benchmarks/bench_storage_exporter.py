"""Storage exporter: scrape time on a tree of 1 million files, walker at work and idle.

A generated tree laid out like the exports (HOMES homes and PROJECTS project folders, each file
of 0 to 255 bytes, a thousand to a directory) in a temporary folder on this disk, removed at the
end (also on SIGTERM). In the same run:

- baselines: `du -s` and `find | wc -l` over the tree (each the whole process, page cache warm),
  and the scrapes of an exporter over empty roots and of one over the same folders holding one
  file each (what a scrape costs per folder);
- the exporter (`python -m aiinfn_hub.storage_exporter`, the real process) over the tree with no
  rate limit: its first pass's duration (its walker_last_pass_duration gauge), then GETs of /metrics
  one after the other once it is idle; another such exporter walking pass after pass: the same
  GETs while its second pass runs, every folder published (the walker at work);
- the same exporter with a budget of --rate entries a second: its pass duration against
  files / rate (the pacing holds).

Each scrape is timed whole, from the request to the last byte, by the benchmark's client.
Run: .venv/bin/python benchmarks/bench_storage_exporter.py [--files N] [--scrapes N] [--json F]
About 4 minutes at a million files on 2 cores. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from aiinfn_dev.devcluster.processes import free_port  # noqa: E402

from aiinfn_hub import names  # noqa: E402

HOMES, PROJECTS, PER_DIRECTORY = 90, 10, 1000
LAST_PASS = "aiinfn_storage_walker_last_pass_duration_seconds"


def generate(root: Path, files: int) -> int:
    """The tree: `files` files over HOMES homes and PROJECTS projects; returns their bytes."""
    folders = [root / "home" / names.slug(f"user{i:03d}") for i in range(HOMES)]
    folders += [root / "projects" / names.slug(f"project-{i}") for i in range(PROJECTS)]
    total = 0
    for index in range(files):
        folder = folders[index % len(folders)]
        directory = folder / f"d{index // len(folders) // PER_DIRECTORY:04d}"
        if index // len(folders) % PER_DIRECTORY == 0:
            directory.mkdir(parents=True, exist_ok=True)
        size = index % 256
        descriptor = os.open(directory / f"f{index}", os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(descriptor, b"x" * size)
        os.close(descriptor)
        total += size
    return total


def timed(command: str) -> tuple[float, str]:
    started = time.perf_counter()
    output = subprocess.run(command, shell=True, capture_output=True, text=True, check=True).stdout
    return time.perf_counter() - started, output.strip()


@contextmanager
def exporter(root: Path, rate: int, log: Path, interval: int = 100_000) -> Iterator[str]:
    """The exporter process over root/home and root/projects; yields its /metrics URL."""
    port = free_port()
    command = [
        sys.executable, "-m", "aiinfn_hub.storage_exporter", "--homes", str(root / "home"),
        "--projects", str(root / "projects"), "--port", str(port), "--rate", str(rate),
        "--interval", str(interval),
    ]  # fmt: skip
    with open(log, "ab") as output:
        process = subprocess.Popen(command, cwd=REPO, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        while True:
            try:
                scrape(url)
                break
            except OSError:
                if process.poll() is not None:
                    raise RuntimeError(log.read_text()[-2000:]) from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def scrape(url: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as answer:
        body = answer.read()
    return time.perf_counter() - started, body


def sample(body: bytes, name: str) -> float | None:
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "n": len(ordered),
        "p50_ms": 1000 * statistics.median(ordered),
        "p95_ms": 1000 * ordered[int(0.95 * (len(ordered) - 1))],
        "max_ms": 1000 * ordered[-1],
    }


def wait_for_pass(url: str) -> bytes:
    while True:
        _, body = scrape(url)
        if sample(body, "aiinfn_storage_walker_passes_total"):
            return body
        time.sleep(0.5)


def run(root: Path, files: int, scrapes: int, rate: int) -> dict[str, Any]:
    result: dict[str, Any] = {"files": files, "folders": HOMES + PROJECTS}
    started = time.perf_counter()
    result["bytes"] = generate(root / "tree", files)
    result["generate_s"] = time.perf_counter() - started
    tree, log = root / "tree", root / "exporter.log"
    result["du_s"], du = timed(f"du -s --apparent-size -B1 {tree}")
    result["find_s"], count = timed(f"find {tree} | wc -l")
    result["find_entries"] = int(count)
    (root / "empty" / "home").mkdir(parents=True)
    (root / "empty" / "projects").mkdir()
    with exporter(root / "empty", 0, log) as url:
        result["empty"] = summary([scrape(url)[0] for _ in range(scrapes)])
    generate(root / "small", HOMES + PROJECTS)  # the same folders, one file each
    with exporter(root / "small", 0, log) as url:
        wait_for_pass(url)
        result["same_folders"] = summary([scrape(url)[0] for _ in range(scrapes)])
    with exporter(tree, 0, log, interval=100_000) as url:
        body = wait_for_pass(url)
        result["pass_s"] = sample(body, LAST_PASS)
        result["idle"] = summary([scrape(url)[0] for _ in range(scrapes)])
        counted = [
            ln for ln in body.decode().splitlines() if ln.startswith("aiinfn_storage_bytes{")
        ]
        result["exported_bytes"] = sum(float(ln.split()[1]) for ln in counted)
        result["scrape_body_bytes"] = len(body)
    with exporter(tree, 0, log, interval=0) as url:
        wait_for_pass(url)  # every folder published; the second pass starts a second later
        time.sleep(1.5)
        busy = [scrape(url)[0] for _ in range(scrapes)]
        passes = sample(scrape(url)[1], "aiinfn_storage_walker_passes_total")
        result["at_work"] = summary(busy)
        result["at_work_passes_during"] = passes  # 1: the second pass lasted the whole sample
    with exporter(tree, rate, log) as url:
        body = wait_for_pass(url)
        result["rate"] = rate
        result["paced_pass_s"] = sample(body, LAST_PASS)
    return result


def markdown(result: dict[str, Any]) -> str:
    empty = result["empty"]
    entries = result["find_entries"] - 1
    lines = [
        f"| tree | {result['files']:,} files, {entries:,} entries, {result['bytes']:,} bytes, "
        f"{result['folders']} folders | |",
        f"| `du -s` / `find \\| wc -l` (baselines) | {result['du_s']:.2f} s / "
        f"{result['find_s']:.2f} s | |",
        f"| first pass, no rate limit | {result['pass_s']:.2f} s | "
        f"**{result['pass_s'] / result['du_s']:.2f}x** `du -s` |",
        f"| pass at --rate {result['rate']:,} | {result['paced_pass_s']:.1f} s | "
        f"{result['paced_pass_s'] / (entries / result['rate']):.2f}x entries / rate |",
        f"| exported bytes = generated | {result['exported_bytes'] == result['bytes']} | |",
        f"| passes completed while scraped at work | {result['at_work_passes_during']:.0f} "
        "(1: every scrape fell in the second pass) | |",
    ]
    same = result["same_folders"]
    labels = {
        "empty": "no folders (baseline)",
        "same_folders": f"{result['folders']} folders of 1 file (baseline)",
        "idle": f"{result['folders']} folders, 1M files, walker idle",
        "at_work": f"{result['folders']} folders, 1M files, walker at work (no rate limit)",
    }
    for name, label in labels.items():
        what = result[name]
        ratios = f"{what['p50_ms'] / empty['p50_ms']:.2f}x / {what['p50_ms'] / same['p50_ms']:.2f}x"
        lines.append(
            f"| scrape p50 / p95 / max, {label} | {what['p50_ms']:.2f} / "
            f"{what['p95_ms']:.2f} / {what['max_ms']:.2f} ms | {ratios} |"
        )
    header = "| measure | value | ratio (scrapes: p50 over no folders / over the same folders) |"
    return "\n".join([header, "|---|---|---|", *lines])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--rate", type=int, default=100_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-storage-", dir="/var/tmp"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # the finally below cleans up
    try:
        result = run(root, args.files, args.scrapes, args.rate)
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=False)
    result["machine"] = f"{os.cpu_count()} cores, Python {platform.python_version()}"
    result["load_1m"] = os.getloadavg()[0]
    print(json.dumps(result, indent=2))
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
