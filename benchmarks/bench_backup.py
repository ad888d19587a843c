"""Backups: the service's backup Job against `borg create` run by hand, on the same tree.

A generated home (FILES small files of 0 to 8 KiB, a thousand to a folder, plus LARGE files of
LARGE_MIB MiB each, random bytes, so neither compresses) is written into the dev storage's homes
claim and given to the home's uid. In the same run, in ROUNDS rounds (each from fresh
repositories: a first run, then a second run of the unchanged tree; which of the two goes first
alternates between rounds):

- **by hand**: `borg init` once, then `borg create` with the Job's options (`borg.create`'s argv:
  zstd,3, one file system, numeric ids, caches excluded) into a repository of its own, as root,
  its cache in a folder of its own; each the whole process (`subprocess.run`). Also by hand the
  Job's other steps, for the same work as the Job (init on the first run, prune on the second:
  the unchanged tree's run prunes nothing, so no compact; list on both);
- **the service's Job**: `manifests.make_backup_job` as the scheduler makes it, created in a
  namespace enforcing Pod Security "restricted" on the dev cluster, whose pod runner runs it
  with this machine's borg as the home's uid: from the Job's creation to its success (seen by
  a watch: no polling while borg runs), the whole process, pod start and every step included;
  and the container that runs create (the Job's one container; the create container of the
  Job before), from its start and finish times (whole seconds: Kubernetes' own);
- **the Job as it was before** (`previous_job`: the same steps in three containers, prepare,
  create and report, as the service made it until now), into a repository of its own, for a
  before/after in the same run.

The ratios (Job / create by hand, Job / every step by hand, second run / first run) are of the
medians over the rounds of the same run. The page cache is warm for both (the tree was just
written), and dirty pages are written out (`os.sync`, untimed) before each timed run: without
it, whichever ran first in a round also paid for writing back the last round's repositories
(up to 10 s at 1.1 GB). borg's own seconds for the archive (`archive.duration` of create's
JSON) are kept for both, to tell borg's work from what surrounds it.

Run: .venv/bin/python benchmarks/bench_backup.py [--files N] [--large N] [--large-mib N]
[--rounds N] [--json F]
It starts (and stops) its own dev cluster, `bench-backup` on a free port, unless
$AIINFN_DEVCLUSTER_NAME names a running one. About 3 minutes on 2 cores at the default size
(20,000 files and 4 x 64 MiB, 3 rounds). Nothing here is a test.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import lifecycle  # noqa: E402
from aiinfn_dev import devstorage  # noqa: E402
from aiinfn_dev.devcluster.cluster import DevCluster  # noqa: E402
from aiinfn_dev.devcluster.processes import free_port  # noqa: E402
from kubernetes_asyncio import client, config, watch  # noqa: E402

from aiinfn_hub import labels, names  # noqa: E402
from aiinfn_hub.services.backup import borg, image, manifests, records, repos  # noqa: E402
from aiinfn_hub.storage_config import StorageSettings  # noqa: E402

USER, UID = "bench", 100001
BEFORE_SLUG = "bench-before"
PER_FOLDER = 1000


def say(message: str) -> None:
    print(f"[bench-backup] {message}", flush=True)


def generate(home: Path, files: int, large: int, large_mib: int) -> int:
    """The home's tree, owned by UID; returns its bytes."""
    total = 0
    for index in range(files):
        folder = home / f"d{index // PER_FOLDER:03d}"
        if index % PER_FOLDER == 0:
            folder.mkdir(parents=True)
        data = secrets.token_bytes(index % 8193)
        (folder / f"f{index}.dat").write_bytes(data)
        total += len(data)
    for index in range(large):
        with (home / f"large{index}.bin").open("wb") as handle:
            for _ in range(large_mib):
                handle.write(secrets.token_bytes(1024 * 1024))
        total += large_mib * 1024 * 1024
    for path in [home, *home.rglob("*")]:
        os.chown(path, UID, UID)
    home.chmod(0o700)
    return total


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
    """The whole process's seconds, and its output."""
    started = time.perf_counter()
    ran = subprocess.run(argv, env=env, cwd=cwd, check=True, capture_output=True, text=True)
    return time.perf_counter() - started, ran.stdout


def borg_duration(output: str) -> float:
    """borg create's own seconds (`archive.duration` of its JSON), whoever ran it."""
    return float(json.loads(output[output.index("{") :])["archive"]["duration"])


def by_hand(home: Path, work: Path, first: bool) -> dict[str, float]:
    """The Job's borg steps run by hand on the same tree, into a repository of their own."""
    settings = borg.BorgSettings(passphrase_file=str(work / "passphrase"), base_dir=str(work))
    repository = str(work / "repository")
    env = {"PATH": os.environ["PATH"], **borg.environment(settings)}
    times: dict[str, float] = {}
    if first:
        times["init"] = timed(list(borg.init(settings, repository).argv), env, work)[0]
    else:
        times["prune"] = timed(list(borg.prune(settings, repository).argv), env, work)[0]
    archive = borg.archive_for(datetime.now(UTC))
    create = borg.create(settings, repository, archive, ["."])
    times["create"], output = timed(list(create.argv), env, home)
    times["list"] = timed(list(borg.list_archives(settings, repository).argv), env, work)[0]
    times["all"] = sum(times.values())
    times["borg_create"] = borg_duration(output)
    return times


def _seconds(start: Any, end: Any) -> float:
    return (end - start).total_seconds()


# The Job before: the same steps in three containers (as the service made it until now).
PREVIOUS_CONTAINERS = {
    "prepare": ("break-lock", "init", "prune", "compact"),
    "create": ("create",),
    "report": ("list", "info"),
}


def _argvs(arguments: list[str]) -> dict[str, list[str]]:
    """The borg argvs BACKUP_SCRIPT was given (each after its length, 0 for none), by step."""
    found = {}
    for name in manifests.BACKUP_STEPS:
        count = int(arguments[0])
        found[name], arguments = arguments[1 : 1 + count], arguments[1 + count :]
    return found


def previous_job(body: dict) -> dict:
    """The Job as it was before its one container: prepare (break-lock, init or prune and
    compact), create, and report (list) each a container of its own, running the same script
    with the other steps left out; into a repository of its own (BEFORE_SLUG)."""
    text = json.dumps(body).replace(f"/homes/{names.slug(USER)}", f"/homes/{BEFORE_SLUG}")
    result = json.loads(text)
    spec = result["spec"]["template"]["spec"]
    backup = spec["containers"][0]
    head, argvs = backup["command"][:6], _argvs(backup["command"][6:])
    containers = []
    for name, steps in PREVIOUS_CONTAINERS.items():
        command = head[:3] + [name] + head[4:]
        for step in manifests.BACKUP_STEPS:
            argv = argvs[step] if step in steps else []
            command += [str(len(argv)), *argv]
        containers.append({**backup, "name": name, "command": command})
    spec["initContainers"], spec["containers"] = containers[:-1], containers[-1:]
    return result


async def the_job(
    api: client.ApiClient, namespace: str, storage: StorageSettings, before: bool = False
) -> dict:
    """The service's backup Job, from its creation to its success (`before`: `previous_job`)."""
    settings = manifests.BackupSettings(image=image.IMAGE, resources={"cpu": "1", "memory": "1Gi"})
    archive = borg.archive_for(datetime.now(UTC))
    run_as = manifests.RunAs(UID, UID)
    body = manifests.make_backup_job(
        settings, storage, repos.home(USER), run_as, archive, uuid.uuid4().hex[:10]
    )
    if before:
        body = previous_job(body)
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    name = body["metadata"]["name"]
    started = time.perf_counter()
    await batch.create_namespaced_job(namespace, body)
    total = await _ended(batch, namespace, name, started)
    pods = await core.list_namespaced_pod(namespace, label_selector=f"job-name={name}")
    pod = pods.items[0]
    statuses = [*(pod.status.init_container_statuses or ()), *pod.status.container_statuses]
    steps = {
        s.name: _seconds(s.state.terminated.started_at, s.state.terminated.finished_at)
        for s in statuses
    }
    created = pod.metadata.creation_timestamp
    ends = [s.state.terminated.finished_at for s in statuses]
    step = "create" if before else manifests.BACKUP_STEP
    answer = await core.read_namespaced_pod_log(
        pod.metadata.name, namespace, container=step, _preload_content=False
    )
    log = records.step_outputs(await answer.text())[manifests.CREATE_OUTPUT]
    return {
        "job": total,
        "create_step": steps[step],
        "borg_create": borg_duration(log),
        # whole seconds (Kubernetes' times): pod made to its first step, last step's end
        "pod_to_first_step": _seconds(created, statuses[0].state.terminated.started_at),
        "pod_to_last_end": _seconds(created, max(ends)),
        "steps": steps,
    }


async def _ended(batch: client.BatchV1Api, namespace: str, name: str, started: float) -> float:
    """Seconds from `started` to the Job's success, seen by a watch (no polling load on the
    API server while borg runs)."""
    selector = f"metadata.name={name}"
    async with watch.Watch() as stream:
        async for event in stream.stream(
            batch.list_namespaced_job, namespace, field_selector=selector, timeout_seconds=3600
        ):
            status = event["object"].status
            if status.failed:
                raise RuntimeError(f"the backup Job {name} failed")
            if status.succeeded:
                return time.perf_counter() - started
    raise RuntimeError(f"the backup Job {name} did not end within the watch")


async def namespace_with_storage(api: client.ApiClient, root: Path, cleanup: list) -> tuple:
    """A restricted namespace with the dev storage (homes claim, backup target) and a keys
    Secret holding the home's passphrase."""
    core = client.CoreV1Api(api)
    namespace = f"bench-backup-{uuid.uuid4().hex[:6]}"
    pod_security = {
        labels.POD_SECURITY_ENFORCE: "restricted",
        labels.POD_SECURITY_ENFORCE_VERSION: "latest",
    }
    await core.create_namespace({"metadata": {"name": namespace, "labels": pod_security}})
    cleanup.append(lambda: core.delete_namespace(namespace))
    documents = await devstorage.setup(api, namespace, root)
    cleanup.append(lambda: devstorage.delete_volumes(api, documents))
    while not await devstorage.claims_bound(api, namespace, documents):
        await asyncio.sleep(0.2)
    passphrase = base64.b64encode(secrets.token_hex(24).encode()).decode()
    secret = {"metadata": {"name": "aiinfn-backup-keys"}, "data": {"home-bench": passphrase}}
    await core.create_namespaced_secret(namespace, secret)
    return namespace, devstorage.claim_folders(documents)


def start_cluster(cleanup: list) -> tuple[DevCluster, dict[str, Any]]:
    name = os.environ.get("AIINFN_DEVCLUSTER_NAME", "bench-backup")
    port = int(os.environ.get("AIINFN_DEVCLUSTER_PORT") or free_port())
    cluster = DevCluster(name=name, port=port, log=say)
    started = time.monotonic()
    if cluster.up(timeout=600):
        cleanup.append(cluster.down)
    return cluster, {"name": name, "up_s": round(time.monotonic() - started, 1)}


async def one_round(
    api: client.ApiClient, namespace: str, storage: StorageSettings, paths: dict, job_first: bool
) -> dict:
    """A first run (fresh repositories: both removed before) and a second, unchanged run, by
    hand and by the Job, in the order given (alternated between rounds)."""
    home, work, target = paths["home"], paths["work"], paths["target"]
    before = target.with_name(BEFORE_SLUG)
    for stale in (work / "repository", work / ".cache", work / ".config", target, before):
        shutil.rmtree(stale, ignore_errors=True)
        shutil.rmtree(f"{stale}.state", ignore_errors=True)
    found: dict[str, Any] = {}
    ways = ["hand", "job", "before"]
    for run_name, first in (("first", True), ("second", False)):
        done: dict[str, Any] = {}
        for way in ways if job_first else ways[::-1]:
            os.sync()
            if way == "hand":
                done["by_hand"] = by_hand(home, work, first)
            else:
                done[way] = await the_job(api, namespace, storage, before=way == "before")
        hand, job = done["by_hand"], done["job"]
        found[run_name] = {"by_hand": hand, **job, "before": done["before"]}
        say(f"{run_name}: by hand create {hand['create']:.2f} s (borg {hand['borg_create']:.2f}),"
            f" all {hand['all']:.2f} s; Job {job['job']:.2f} s (create step "
            f"{job['create_step']:.0f} s, borg {job['borg_create']:.2f}; pod to last end "
            f"{job['pod_to_last_end']:.0f} s); before {done['before']['job']:.2f} s (borg "
            f"{done['before']['borg_create']:.2f})")  # fmt: skip
    return found


async def run(args: argparse.Namespace, result: dict, cleanup: list) -> None:
    cluster, result["cluster"] = start_cluster(cleanup)
    api = await config.new_client_from_config(str(cluster.layout.admin_kubeconfig))
    cleanup.append(api.close)
    scratch = Path(tempfile.mkdtemp(prefix="bench-backup-"))
    cleanup.append(lambda: shutil.rmtree(scratch, ignore_errors=True))
    namespace, folders = await namespace_with_storage(api, scratch / "storage", cleanup)
    storage = StorageSettings()
    home = folders[storage.home_claim] / names.slug(USER)
    say(f"generating {args.files} files and {args.large} x {args.large_mib} MiB in {home}")
    result["tree"] = {"files": args.files + args.large, "bytes": generate(
        home, args.files, args.large, args.large_mib
    )}  # fmt: skip
    work = scratch / "by-hand"
    work.mkdir()
    (work / "passphrase").write_text(secrets.token_hex(24))
    target_claim = manifests.BackupSettings(image=image.IMAGE).target_claim
    target = Path(repos.path_under(str(folders[target_claim]), repos.home(USER)))
    paths = {"home": home, "work": work, "target": target}
    result["rounds"] = []
    for index in range(args.rounds):
        say(f"round {index + 1} of {args.rounds}")
        found = await one_round(api, namespace, storage, paths, job_first=index % 2 == 1)
        result["rounds"].append(found)


def _median(rounds: list[dict], run_name: str, pick: Any) -> float:
    return statistics.median(pick(one[run_name]) for one in rounds)


def report(result: dict) -> None:
    rounds = result["rounds"]
    header = ("run", "create by hand", "all steps by hand", "Job", "Job / create", "Job / all")
    print(" | ".join((*header, "Job before (3 containers)", "before / create")))
    medians = {}
    for name in ("first", "second"):
        create = _median(rounds, name, lambda r: r["by_hand"]["create"])
        every = _median(rounds, name, lambda r: r["by_hand"]["all"])
        job = _median(rounds, name, lambda r: r["job"])
        before = _median(rounds, name, lambda r: r["before"]["job"])
        ratios = [r[name]["job"] / r[name]["by_hand"]["create"] for r in rounds]
        borg_hand = _median(rounds, name, lambda r: r["by_hand"]["borg_create"])
        borg_job = _median(rounds, name, lambda r: r["borg_create"])
        medians[name] = (create, job)
        print(" | ".join((
            name, f"{create:.2f} s", f"{every:.2f} s", f"{job:.2f} s",
            f"{job / create:.2f} (rounds {min(ratios):.2f} to {max(ratios):.2f})",
            f"{job / every:.2f}", f"{before:.2f} s", f"{before / create:.2f}",
        )))  # fmt: skip
        print(f"  {name}: borg's own create seconds: by hand {borg_hand:.2f}, Job {borg_job:.2f}")
        outside = (
            _median(rounds, name, lambda r: r["by_hand"]["all"] - r["by_hand"]["borg_create"]),
            _median(rounds, name, lambda r: r["job"] - r["borg_create"]),
            _median(rounds, name, lambda r: r["before"]["job"] - r["before"]["borg_create"]),
        )
        print(f"  {name}: seconds outside borg's create: every step by hand {outside[0]:.2f},"
              f" Job {outside[1]:.2f}, before {outside[2]:.2f}")  # fmt: skip
    (hand1, job1), (hand2, job2) = medians["first"], medians["second"]
    print(f"second / first: by hand create {hand2 / hand1:.3f}, Job {job2 / job1:.3f}")
    print(f"tree: {result['tree']}; {len(rounds)} rounds, medians")
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, "
          f"Python {platform.python_version()}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=20_000, help="small files (0 to 8 KiB)")
    parser.add_argument("--large", type=int, default=4, help="large files")
    parser.add_argument("--large-mib", type=int, default=64, help="MiB per large file")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (medians reported)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    lifecycle.stop_on_sigterm()
    result = asyncio.run(
        lifecycle.run_then_clean_up(
            run, args, {"date": datetime.now(UTC).isoformat(timespec="seconds")}
        )
    )
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
