"""One runner pod on this machine: its IP, volumes, container processes and reported status.

A `PodWorker` plays the kubelet's pod worker for one pod of the pod runner (podrunner.py):
volumes laid out (secret-like ones rewritten as their objects change), init containers then
containers started through sandbox.py, readiness probed, restarts with the crash-loop back-off,
and on deletion SIGTERM, the grace period, SIGKILL, the terminal status and the object deleted.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import shutil
import signal
import stat
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from aiinfn_hub import k8s

from . import podplan, podstatus, sandbox
from .podplan import ConfigError, MountError

if TYPE_CHECKING:
    from .podrunner import PodRunner

log = logging.getLogger("aiinfn_dev.devcluster.podrunner")

RETRY_SECONDS = 2.0  # a container whose configuration is wrong is planned again this often
MOUNT_RETRY_BASE = 0.5  # a missing object: the first retry after 0.25-0.5 s, then doubling
PORT_POLL_SECONDS = 0.2
DEFAULT_GRACE_SECONDS = 30


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _suffix() -> str:
    return format(time.time_ns(), "x")


def write_volume_files(
    path: Path, files: Mapping[str, tuple[bytes, int]], group: int | None
) -> bool:
    """Write a secret-like volume the way the kubelet's atomic writer does (a timestamped
    folder, the ..data link swapped in one rename, a link per top-level name); False if the
    content was already there."""
    current = path / "..data"
    if current.exists() and _same_files(current, files):
        return False
    path.mkdir(parents=True, exist_ok=True)
    stamp = path / datetime.datetime.now().strftime("..%Y_%m_%d_%H_%M_%S.%f")
    stamp.mkdir(mode=0o755)
    for relative, (content, mode) in files.items():
        target = stamp / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        if group is not None:
            os.chown(target, -1, group)
            mode |= 0o040
        target.chmod(mode)
    old = os.readlink(current) if current.is_symlink() else None
    (path / "..data_tmp").symlink_to(stamp.name)
    (path / "..data_tmp").rename(current)
    tops = {relative.split("/")[0] for relative in files}
    for entry in path.iterdir():
        if not entry.name.startswith("..") and entry.name not in tops:
            entry.unlink()
    for top in tops:
        if not (path / top).is_symlink():
            (path / top).symlink_to(f"..data/{top}")
    if old:
        shutil.rmtree(path / old, ignore_errors=True)
    return True


def _same_files(current: Path, files: Mapping[str, tuple[bytes, int]]) -> bool:
    try:
        return all(
            (current / relative).read_bytes() == content for relative, (content, _) in files.items()
        ) and sum(1 for p in current.rglob("*") if p.is_file()) == len(files)
    except OSError:
        return False


async def _tcp_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (TimeoutError, OSError):
        return False
    writer.close()
    return True


async def _http_answers(host: str, port: int, path: str, timeout: float, scheme: str) -> bool:
    """An httpGet probe: success is a status from 200 to 399."""
    url = f"{scheme.lower()}://{host}:{port}{path or '/'}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async with session.get(url, allow_redirects=False, ssl=False) as response:
                return 200 <= response.status < 400
    except (TimeoutError, aiohttp.ClientError, OSError):
        return False


class PodWorker:
    """One runner pod: its IP, volumes, processes and reported status."""

    def __init__(self, runner: PodRunner, pod: dict[str, Any], node: dict[str, Any]) -> None:
        self.runner = runner
        self.pod = pod
        meta, spec = pod["metadata"], pod["spec"]
        self.uid = meta["uid"]
        self.dir = Path(runner.settings.state) / f"{meta['namespace']}_{meta['name']}_{self.uid}"
        self.image = runner.settings.images[podplan.runner_image(pod)]
        self.node = node
        self.host_ip = next(
            (
                a["address"]
                for a in node.get("status", {}).get("addresses") or []
                if a.get("type") == "InternalIP"
            ),
            "127.0.0.1",
        )
        self.ip = ""
        self.start_time = now()
        self.policy = spec.get("restartPolicy", "Always")
        self.init = list(spec.get("initContainers") or [])
        self.main = list(spec["containers"])
        self.statuses: dict[str, dict[str, Any]] = {}
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.log_files: dict[str, tuple[str, str | None]] = {}
        self.volumes: dict[str, podplan.Volume] = {}
        self.objects = podplan.Objects()
        self.warned: set[str] = set()
        self.report_lock = asyncio.Lock()
        self.task: asyncio.Task | None = None
        self.stopping = False

    # -- reporting ---------------------------------------------------------------------------

    def _init_statuses(self) -> list[dict[str, Any]]:
        return [self.statuses[c["name"]] for c in self.init]

    def _main_statuses(self) -> list[dict[str, Any]]:
        return [self.statuses[c["name"]] for c in self.main]

    async def report(self, final_phase: str | None = None) -> None:
        """Patch pods/status with the current container statuses (the latest state wins)."""
        async with self.report_lock:
            phase = final_phase or podstatus.phase(
                self.policy,
                podstatus.regular_init(self.pod, self._init_statuses()),
                self._main_statuses(),
            )
            patch = podstatus.status_patch(
                self.pod,
                phase,
                self._init_statuses(),
                self._main_statuses(),
                self.ip,
                self.host_ip,
                self.start_time,
                now(),
            )
            await self.runner.patch_status(self.pod, patch)

    async def event(
        self, reason: str, message: str, container: str | None = None, warning: bool = False
    ) -> None:
        await self.runner.post_event(
            podstatus.event(self.pod, reason, message, now(), _suffix(), container, warning)
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self.task = asyncio.create_task(self._lifecycle(), name=f"pod-{self.uid}")
        self.task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception():
            log.error("%s: pod worker failed", self.dir.name, exc_info=task.exception())

    async def _lifecycle(self) -> None:
        for container in self.init:
            self.statuses[container["name"]] = podstatus.waiting(container, "PodInitializing")
        for container in self.main:
            reason = "PodInitializing" if self.init else "ContainerCreating"
            self.statuses[container["name"]] = podstatus.waiting(container, reason)
        self.ip = self.runner.allocate_ip(self.pod, self.node)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)  # secrets and logs; containers see only what is bound into them
        await self.report()
        await self._prepare_volumes()
        sync = asyncio.create_task(self._sync_volumes())
        try:
            for container in self.init:
                if not await self._run(container, init=True):
                    break
            else:
                await asyncio.gather(*(self._run(c, init=False) for c in self.main))
        finally:
            sync.cancel()
        self.runner.release_ip(
            self.ip
        )  # every process has ended (a cancelled run gets here via terminate)

    async def _prepare_volumes(self) -> None:
        """Fetch what the pod references and lay its volumes out; a missing object is retried
        with a FailedMount event and the API access layer's backoff, as the kubelet does."""
        attempt = 0
        while True:
            try:
                self.objects = await self.runner.fetch_objects(self.pod, self.objects.tokens)
                self.volumes = podplan.pod_volumes(
                    self.pod,
                    self.objects,
                    str(self.dir),
                    self.ip,
                    self.host_ip,
                    self.node.get("status", {}).get("allocatable") or {},
                )
                self._lay_out_volumes()
                for volume in self.volumes.values():
                    if volume.stand_in:
                        await self.event("StandInVolume", volume.stand_in, warning=True)
                return
            except (TimeoutError, MountError, ConfigError, aiohttp.ClientError, OSError) as error:
                message = f"MountVolume.SetUp failed: {error}"
                if message not in self.warned:
                    self.warned.add(message)
                    await self.event("FailedMount", message, warning=True)
            attempt += 1
            await asyncio.sleep(k8s.backoff_delay(attempt, MOUNT_RETRY_BASE, RETRY_SECONDS * 2))

    def _fs_group(self) -> int | None:
        return (self.pod["spec"].get("securityContext") or {}).get("fsGroup")

    def _lay_out_volumes(self) -> None:
        group = self._fs_group() if os.geteuid() == 0 else None
        for volume in self.volumes.values():
            path = Path(volume.path)
            if volume.files is not None:
                write_volume_files(path, volume.files, group)
            elif path.is_relative_to(self.dir) and not path.exists():
                path.mkdir(parents=True)
                path.chmod(0o777)  # emptyDir: world-writable, as the kubelet makes it

    async def _sync_volumes(self) -> None:
        """Keep secret, configMap and downward API volumes current, as the kubelet's sync does."""
        while True:
            await asyncio.sleep(self.runner.settings.volume_sync_seconds)
            try:
                self.objects = await self.runner.fetch_objects(self.pod, self.objects.tokens)
                volumes = podplan.pod_volumes(
                    self.pod,
                    self.objects,
                    str(self.dir),
                    self.ip,
                    self.host_ip,
                    self.node.get("status", {}).get("allocatable") or {},
                )
            except (TimeoutError, MountError, ConfigError, aiohttp.ClientError, OSError) as error:
                log.info("volume sync of %s skipped: %s", self.dir.name, error)
                continue
            group = self._fs_group() if os.geteuid() == 0 else None
            for volume in volumes.values():
                if volume.files is not None:
                    write_volume_files(Path(volume.path), volume.files, group)

    def _plan(self, container: dict[str, Any], restarts: int) -> podplan.Plan:
        uid, gid, groups = podplan.container_user(self.pod, container, self.image)
        allocatable = self.node.get("status", {}).get("allocatable") or {}
        api_server = self.runner.settings.api_server
        services = podplan.kubernetes_service_env(api_server) if api_server else {}
        env = podplan.container_env(
            self.pod,
            container,
            self.image,
            self.objects,
            self.ip,
            self.host_ip,
            allocatable,
            services,
        )
        argv = podplan.container_argv(container, self.image, env)
        env = podplan.listen_on_pod_ip(env, self.ip)
        mounts = podplan.container_mounts(container, self.volumes, env)
        cdir = self.dir / "containers" / container["name"]
        (cdir / "rootfs").mkdir(parents=True, exist_ok=True)
        tmp = cdir / "tmp"
        tmp.mkdir(exist_ok=True)
        tmp.chmod(0o1777)
        for mount in mounts:
            source = Path(mount.source)
            if not mount.is_file and not source.exists():
                source.mkdir(parents=True, mode=0o755)
        ctx = container.get("securityContext") or {}
        name = podplan.hostname(self.pod)
        etc = {
            "/etc/passwd": podplan.etc_passwd(_read("/etc/passwd"), self.image),
            "/etc/group": podplan.etc_group(_read("/etc/group"), self.image),
            "/etc/hosts": podplan.etc_hosts(self.ip, name),
            "/etc/hostname": name + "\n",
            "/etc/profile": podplan.etc_profile(_read("/etc/profile"), env.get("PATH", "")),
        }
        host_paths, image_mounts = image_root(self.runner.settings.host_paths, self.image)
        cwd = container.get("workingDir") or self.image.workdir or self.image.home
        return podplan.Plan(
            argv=argv,
            env=env,
            cwd=cwd,
            uid=uid,
            gid=gid,
            groups=groups,
            hostname=name,
            no_new_privs=ctx.get("allowPrivilegeEscalation") is False,
            read_only_root=bool(ctx.get("readOnlyRootFilesystem")),
            host_paths=host_paths,
            mounts=[podplan.Mount(str(tmp), "/tmp", False), *image_mounts, *mounts],
            etc=etc,
            root=str(cdir / "rootfs"),
            log=str(cdir / f"{restarts}.log"),
        )

    async def _run(self, container: dict[str, Any], init: bool) -> bool:
        """Run one container until the restart policy lets it rest; True if it ended well."""
        name = container["name"]
        sidecar = init and container.get("restartPolicy") == "Always"
        if sidecar or container.get("image") not in self.runner.settings.images:
            return await self._simulate(container, init and not sidecar)
        restarts = 0
        last: dict[str, Any] | None = None
        while True:
            code, terminated = await self._start_once(container, restarts, last, init)
            policy = "OnFailure" if init and self.policy == "Always" else self.policy
            if not podstatus.should_restart(policy, code):
                self.statuses[name] = terminated
                await self.report()
                return code == 0
            last = {"terminated": terminated["state"]["terminated"]}
            delay = podstatus.restart_delay(restarts + 1)
            # As the kubelet: restartCount counts restarts made, so it grows when the back-off ends.
            self.statuses[name] = podstatus.waiting(
                container,
                "CrashLoopBackOff",
                f"back-off {int(delay)}s restarting failed container={name} "
                f"pod={self.pod['metadata']['name']}_{self.pod['metadata']['namespace']}({self.uid})",
                restarts,
                last,
            )
            await self.report()
            await self.event(
                "BackOff",
                f"Back-off restarting failed container {name} in pod "
                f"{self.pod['metadata']['name']}_{self.pod['metadata']['namespace']}({self.uid})",
                name,
                warning=True,
            )
            await asyncio.sleep(delay)
            restarts += 1

    async def _simulate(self, container: dict[str, Any], init: bool) -> bool:
        """A container whose image has no local environment, or a native sidecar: reported as
        kwok would, running and ready, or completed for an init container, without running."""
        at = now()
        self.statuses[container["name"]] = (
            podstatus.terminated(container, 0, at, at)
            if init
            else podstatus.running(container, at, True)
        )
        await self.report()
        return True

    async def _plan_when_possible(
        self, container: dict[str, Any], restarts: int, last: dict[str, Any] | None
    ) -> podplan.Plan:
        """The container's sandbox plan; a configuration error (a missing Secret, say) is reported
        as CreateContainerConfigError and retried, as the kubelet does."""
        while True:
            try:
                return self._plan(container, restarts)
            except ConfigError as error:
                self.statuses[container["name"]] = podstatus.waiting(
                    container, "CreateContainerConfigError", str(error), restarts, last
                )
                await self.report()
                await self.event("Failed", f"Error: {error}", container["name"], warning=True)
                await asyncio.sleep(RETRY_SECONDS)

    async def _start_once(
        self, container: dict[str, Any], restarts: int, last: dict[str, Any] | None, init: bool
    ) -> tuple[int, dict[str, Any]]:
        """Start the container's process and wait for it; (exit code, its terminated status)."""
        name = container["name"]
        plan = await self._plan_when_possible(container, restarts, last)
        process = await self._spawn_sandbox(container, plan, restarts)
        self.processes[name] = process
        try:
            line = await process.stdout.readline()
            message = (
                json.loads(line)
                if line.strip()
                else {"error": "the sandbox exited before starting"}
            )
            if "error" in message:
                return await self._start_failed(
                    container, process, message["error"], restarts, last
                )
            started = message["started"][:19] + "Z"
            return await self._until_exit(container, plan, process, started, restarts, last, init)
        finally:
            self.processes.pop(name, None)

    async def _spawn_sandbox(
        self, container: dict[str, Any], plan: podplan.Plan, restarts: int
    ) -> asyncio.subprocess.Process:
        """The sandbox process for one start of the container (plan.json beside its sandbox.log);
        its first stdout line says, in JSON, whether the container started."""
        name = container["name"]
        plan_path = self.dir / "containers" / name / "plan.json"
        plan_path.write_text(plan.to_json())
        if restarts == 0:
            await self.event(
                "Pulled", f'Container image "{container["image"]}" already present on machine', name
            )
        await self.event("Created", f"Created container: {name}", name)
        with open(plan_path.with_name("sandbox.log"), "ab") as sandbox_log:
            return await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                sandbox.MODULE,
                str(plan_path),
                str(os.getpid()),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=sandbox_log,
                start_new_session=True,
            )

    async def _start_failed(
        self,
        container: dict[str, Any],
        process: asyncio.subprocess.Process,
        reason: str,
        restarts: int,
        last: dict[str, Any] | None,
    ) -> tuple[int, dict[str, Any]]:
        """The sandbox could not start the container: a StartError termination, as the kubelet
        reports a runtime's failure to start, with a warning event saying why."""
        name = container["name"]
        code = exit_code(await process.wait())
        error = f"failed to start container {name!r}: {reason}"
        log.warning("%s: %s", self.dir.name, error)
        await self.event("Failed", f"Error: {error}", name, warning=True)
        return code, podstatus.terminated(
            container,
            code,
            now(),
            restart_count=restarts,
            reason="StartError",
            message=error,
            last_state=last,
        )

    async def _until_exit(
        self,
        container: dict[str, Any],
        plan: podplan.Plan,
        process: asyncio.subprocess.Process,
        started: str,
        restarts: int,
        last: dict[str, Any] | None,
        init: bool,
    ) -> tuple[int, dict[str, Any]]:
        """A started container: reported running (ready at once when nothing is to be probed),
        its readiness probed meanwhile, then its terminated status once the process exits."""
        name = container["name"]
        self.log_files[name] = (
            plan.log,
            str(self.dir / "containers" / name / f"{restarts - 1}.log") if restarts else None,
        )
        await self.runner.put_logs(self.pod, self.log_files)
        probe = container.get("readinessProbe")
        ports = [
            p["containerPort"]
            for p in container.get("ports") or []
            if p.get("protocol", "TCP") == "TCP"
        ]
        ready_now = not init and not probe and not ports
        self.statuses[name] = podstatus.running(container, started, ready_now, restarts, last)
        await self.report()
        await self.event("Started", f"Started container {name}", name)
        log.info("%s: container %s started (sandbox pid %d)", self.dir.name, name, process.pid)
        readiness = (
            None
            if init or ready_now
            else asyncio.create_task(
                self._readiness(container, started, restarts, last, probe, ports)
            )
        )
        try:
            code = exit_code(await process.wait())
        finally:
            if readiness:
                readiness.cancel()
        log.info("%s: container %s exited with %d", self.dir.name, name, code)
        message = None
        if code != 0 and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            message = podstatus.fallback_message(_read_bytes(plan.log)) or None
        return code, podstatus.terminated(
            container, code, now(), started, restarts, message=message, last_state=last
        )

    async def _readiness(
        self,
        container: dict[str, Any],
        started: str,
        restarts: int,
        last: dict[str, Any] | None,
        probe: dict[str, Any] | None,
        ports: list[int],
    ) -> None:
        """Ready once the readiness probe passes (kept up to date), or without a probe once the
        first declared port answers on the pod IP."""
        name = container["name"]
        if not probe:
            while not await _tcp_answers(self.ip, ports[0]):
                await asyncio.sleep(PORT_POLL_SECONDS)
            self.statuses[name] = podstatus.running(container, started, True, restarts, last)
            await self.report()
            log.info(
                "%s: container %s ready (%s:%d answers)", self.dir.name, name, self.ip, ports[0]
            )
            return
        await asyncio.sleep(probe.get("initialDelaySeconds", 0))
        ready, successes, failures = False, 0, 0
        while True:
            ok = await self._probe(container, probe)
            successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
            now_ready = (
                ready and failures < probe.get("failureThreshold", 3)
            ) or successes >= probe.get("successThreshold", 1)
            if now_ready != ready:
                ready = now_ready
                self.statuses[name] = podstatus.running(container, started, ready, restarts, last)
                await self.report()
            await asyncio.sleep(probe.get("periodSeconds", 10))

    async def _probe(self, container: dict[str, Any], probe: dict[str, Any]) -> bool:
        timeout = probe.get("timeoutSeconds", 1)
        named = {p.get("name"): p["containerPort"] for p in container.get("ports") or []}
        for kind in ("httpGet", "tcpSocket", "grpc"):
            if kind in probe:
                action = probe[kind]
                port = (
                    named.get(action["port"], action["port"])
                    if isinstance(action["port"], str)
                    else action["port"]
                )
                host = action.get("host") or self.ip
                if kind == "httpGet":
                    return await _http_answers(
                        host,
                        int(port),
                        action.get("path", "/"),
                        timeout,
                        action.get("scheme", "HTTP"),
                    )
                return await _tcp_answers(host, int(port), timeout)
        return True  # exec probes are not run: counted as passing (docs/devcluster.md)

    # -- stopping ----------------------------------------------------------------------------

    async def terminate(self) -> None:
        """The pod is being deleted: stop its processes within the grace period, report the
        terminal status, then delete the object (grace 0, as kwok's pod-delete stage does)."""
        if self.stopping:
            return
        self.stopping = True
        grace = self.pod["metadata"].get("deletionGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
        running = dict(self.processes)
        log.info(
            "%s: deleted; stopping %d container(s) within %ss", self.dir.name, len(running), grace
        )
        await self.cancel_lifecycle()
        for name in running:
            await self.event("Killing", f"Stopping container {name}", name)
        codes = await stop_processes(running, grace)
        for container in [*self.init, *self.main]:
            name = container["name"]
            state = self.statuses.get(name, {}).get("state") or {}
            if name in codes and "running" in state:
                self.statuses[name] = podstatus.terminated(
                    container,
                    codes[name],
                    now(),
                    state["running"]["startedAt"],
                    self.statuses[name]["restartCount"],
                    last_state=self.statuses[name].get("lastState"),
                )
        if self.statuses:
            await self.report(final_phase=podstatus.terminal_phase(self._main_statuses()))
        await self.runner.delete_pod(self.pod)
        self.runner.release_ip(self.ip)
        self.remove_files()

    async def kill(self) -> None:
        """The pod object is gone already: kill everything at once."""
        self.stopping = True
        running = dict(self.processes)
        await self.cancel_lifecycle()
        await stop_processes(running, 0)
        self.runner.release_ip(self.ip)
        self.remove_files()

    async def cancel_lifecycle(self) -> None:
        if self.task and not self.task.done():
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass

    def remove_files(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def image_root(
    host_paths: list[str], image: podplan.LocalImage
) -> tuple[list[str], list[podplan.Mount]]:
    """The host folders shown and the files the image adds, bound read-only where the image has
    them (host folders on their way shown entry by entry, so the mount points can be made)."""
    targets = [target for target, _ in image.files]
    folders = podplan.folders_on_the_way(host_paths, targets)
    listing = {folder: _entries(folder) for folder in folders if os.path.isdir(folder)}
    shown, host_files = podplan.split_host_paths(host_paths, targets, listing)
    added = [
        podplan.Mount(source, target, True, os.path.isfile(source))
        for target, source in image.files
    ]
    return shown, [*host_files, *added]


def _entries(folder: str) -> dict[str, str]:
    """A host folder's entries by kind, leaving out what not every user may read."""
    entries = {}
    with os.scandir(folder) as scan:
        for entry in scan:
            info = entry.stat(follow_symlinks=False)
            if entry.is_symlink():
                entries[entry.name] = "link"
            elif info.st_mode & stat.S_IROTH and entry.is_dir(follow_symlinks=False):
                entries[entry.name] = "dir"
            elif info.st_mode & stat.S_IROTH and entry.is_file(follow_symlinks=False):
                entries[entry.name] = "file"
    return entries


def exit_code(code: int) -> int:
    """The exit code reported for a process that ended by a signal (negative from asyncio)."""
    return code if code >= 0 else 128 - code


async def stop_processes(
    processes: Mapping[str, asyncio.subprocess.Process], grace: float
) -> dict[str, int]:
    """SIGTERM each sandbox (it forwards to the container's PID 1), wait up to grace seconds,
    then SIGKILL the process groups; the exit codes by container name."""
    for process in processes.values():
        if process.returncode is None:
            try:
                os.kill(process.pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
            except ProcessLookupError:
                pass
    waits = {name: asyncio.create_task(p.wait()) for name, p in processes.items()}
    if waits:
        await asyncio.wait(waits.values(), timeout=grace)
    for process in processes.values():
        if process.returncode is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return {name: exit_code(await task) for name, task in waits.items()}


def _read_bytes(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""
