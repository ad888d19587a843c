"""One container of a runner pod: namespaces, a root built from host folders and volumes, the
pod's user, then exec. The pod runner's equivalent of runc plus conmon.

`python -m aiinfn_dev.devcluster.sandbox PLAN.json RUNNER_PID` (a `podplan.Plan`) runs as the
user who runs the dev cluster, root or not: it enters new user, mount, UTS, IPC and PID
namespaces, maps the plan's uid/gid to its own, builds a root on a tmpfs (host system folders
and environments read-only, a minimal /dev, the pod's volumes bound at their mount paths,
generated /etc/passwd, /etc/group and /etc/hosts), forks the container's process as PID 1 of
its PID namespace, and execs it with no capabilities. It stays as the process's parent: it
writes the process's output to the container log in the CRI format (what kubectl logs reads),
forwards SIGTERM, and exits with the process's exit code (128 + signal if killed).

On stdout it tells the runner one JSON line: {"started": TIME} once exec succeeded, or
{"error": MESSAGE} if the container could not start (then it exits 128, as containerd reports).
"""

from __future__ import annotations

import ctypes
import datetime
import json
import os
import platform
import selectors
import signal
import stat
import subprocess
import sys
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 32, 1024, 2048, 4096, 16384
MS_PRIVATE, MS_RELATIME = 1 << 18, 1 << 21
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
# statvfs flag -> mount flag a read-only remount must keep (the kernel refuses to drop locked ones).
_KEEP_FLAGS = (
    (os.ST_NOSUID, MS_NOSUID),
    (os.ST_NODEV, MS_NODEV),
    (os.ST_NOEXEC, MS_NOEXEC),
    (os.ST_NOATIME, MS_NOATIME),
    (os.ST_NODIRATIME, MS_NODIRATIME),
    (os.ST_RELATIME, MS_RELATIME),
)
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = {
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
    "ptmx": "pts/ptmx",
}
START_ERROR_EXIT = 128
MODULE = "aiinfn_dev.devcluster.sandbox"
LOG_CHUNK = 16384

_libc = ctypes.CDLL(None, use_errno=True)


class SandboxError(Exception):
    """The container could not be set up; the message says which step and why."""


def _call(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise SandboxError(f"{what}: {os.strerror(errno)}")


def _mount(
    source: str, target: str, fstype: str | None, flags: int, data: str | None = None
) -> None:
    _call(
        _libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def _read_only(target: str) -> None:
    """Remount one mount point read-only, keeping the flags the kernel locks."""
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY
    current = os.statvfs(target).f_flag
    for st_flag, ms_flag in _KEEP_FLAGS:
        if current & st_flag:
            flags |= ms_flag
    _mount("none", target, None, flags)


def _read_only_tree(target: str) -> None:
    """Make a recursive bind read-only, its submounts included (a remount is per mount point)."""
    with open("/proc/self/mountinfo") as mountinfo:
        points = [line.split()[4].replace("\\040", " ") for line in mountinfo]
    for point in points:
        if point == target or point.startswith(target + "/"):
            _read_only(point)


def _bind(source: str, target: str, read_only: bool) -> None:
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.exists(target):
            open(target, "w").close()
    _mount(source, target, None, MS_BIND | MS_REC)
    if read_only:
        _read_only_tree(target)


def _enter_namespaces(uid: int, gid: int, hostname: str) -> None:
    """New namespaces. Run by root, ids map to themselves (the process really is uid:gid with its
    groups, as under a container runtime); otherwise only uid:gid exist, as the runner's user."""
    host_uid, host_gid = os.geteuid(), os.getegid()
    if host_uid == 0:
        # Only a process left in the parent namespace may write a map of more than its own id.
        go_r, go_w = os.pipe()
        helper = os.fork()
        if helper == 0:
            os.close(go_w)
            code = 1
            if os.read(go_r, 1):
                parent = os.getppid()
                for name in ("uid_map", "gid_map"):
                    with open(f"/proc/{parent}/{name}", "w") as f:
                        f.write(f"0 0 {2**32 - 1}")
                code = 0
            os._exit(code)
        os.close(go_r)
        _call(_libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC), "unshare")
        os.write(go_w, b"x")
        os.close(go_w)
        if os.waitstatus_to_exitcode(os.waitpid(helper, 0)[1]) != 0:
            raise SandboxError("writing the user namespace's id maps failed")
    else:
        _call(_libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC), "unshare")
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"{uid} {host_uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"{gid} {host_gid} 1")
    name = hostname.encode()
    _call(_libc.sethostname(name, len(name)), "sethostname")
    _mount("none", "/", None, MS_REC | MS_PRIVATE)


def _mask_unreadable(root: str, top: str) -> None:
    """Hide what not every local user may read under a host folder (keys, shadow files): the
    container's uid is the runner's user, which may be root."""
    for dirpath, dirnames, filenames in os.walk(top):
        for name in list(dirnames) + filenames:
            path = os.path.join(dirpath, name)
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode) or info.st_mode & stat.S_IROTH:
                continue
            if stat.S_ISDIR(info.st_mode):
                dirnames.remove(name)
                _mount(
                    "tmpfs",
                    root + path,
                    "tmpfs",
                    MS_RDONLY | MS_NOSUID | MS_NODEV,
                    "size=4k,mode=000",
                )
            else:
                _mount("/dev/null", root + path, None, MS_BIND)


def build_root(plan: dict[str, Any], workdir: str) -> None:
    """The container's file tree under plan["root"], in this (new) mount namespace."""
    root = plan["root"]
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=1g")
    # A host folder under a mount target (an environment in a checkout under /tmp, say, below the
    # pod's private /tmp) would be hidden by that mount: it is shown after the mounts, on top.
    targets = tuple(m["target"].rstrip("/") + "/" for m in plan["mounts"])
    under_mounts = [p for p in plan["host_paths"] if p.startswith(targets)]
    for path in plan["host_paths"]:
        if path not in under_mounts:
            _show_host_path(root, path)
    if os.path.isdir(root + "/etc"):
        _mask_unreadable(root, "/etc")
    for name, content in plan["etc"].items():
        generated = os.path.join(workdir, "etc-" + os.path.basename(name))
        with open(generated, "w") as f:
            f.write(content)
        if os.path.exists(root + name):
            _mount(generated, root + name, None, MS_BIND)
            _read_only(root + name)
    dev = root + "/dev"
    os.makedirs(dev)
    _mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=64k")
    for device in DEVICES:
        if os.path.exists("/dev/" + device):
            _bind("/dev/" + device, f"{dev}/{device}", read_only=False)
    for link, target in DEV_LINKS.items():
        os.symlink(target, f"{dev}/{link}")
    os.makedirs(dev + "/pts")
    _mount(
        "devpts",
        dev + "/pts",
        "devpts",
        MS_NOSUID | MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620",
    )
    os.makedirs(dev + "/shm")
    _mount("tmpfs", dev + "/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=256m")
    os.makedirs(root + "/proc")
    for mount in sorted(plan["mounts"], key=lambda m: m["target"].count("/")):
        target = root + mount["target"]
        try:
            _bind(mount["source"], target, mount["read_only"])
        except OSError as error:
            raise SandboxError(
                f"mount {mount['target']}: {error.strerror} (a mount point inside a "
                "read-only host folder cannot be made)"
            ) from None
    for path in under_mounts:
        _show_host_path(root, path)


def _show_host_path(root: str, path: str) -> None:
    """A host folder read-only at the same path in the container (a link as the same link)."""
    if os.path.islink(path):
        os.makedirs(os.path.dirname(root + path), exist_ok=True)
        os.symlink(os.readlink(path), root + path)
    elif os.path.isdir(path):
        _bind(path, root + path, read_only=True)


def _child(plan: dict[str, Any], out_w: int, err_w: int, status_w: int) -> None:
    """In the new PID namespace: /proc, pivot into the root, drop to the user, exec."""
    try:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        root = plan["root"]
        # pivot_root acts on the whole mount namespace: take a copy, so the supervisor keeps the
        # host's.
        _call(_libc.unshare(CLONE_NEWNS), "unshare(mount)")
        _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        os.chdir(root)
        _call(_libc.syscall(SYS_PIVOT_ROOT[platform.machine()], b".", b"."), "pivot_root")
        _call(_libc.umount2(b".", MNT_DETACH), "umount old root")
        os.chdir("/")
        if plan["read_only_root"]:
            _read_only("/")
        os.makedirs(plan["cwd"], exist_ok=True)
        os.chdir(plan["cwd"])
        if plan["no_new_privs"]:
            _call(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(no_new_privs)")
        if (
            os.geteuid() == 0
        ):  # identity-mapped: become the pod's user; exec then drops every capability
            os.setgroups(plan["groups"])
            os.setresgid(plan["gid"], plan["gid"], plan["gid"])
            os.setresuid(plan["uid"], plan["uid"], plan["uid"])
        os.umask(0o022)
        # After the change of user, which clears it: dies with its supervisor, and its PID
        # namespace with it, whatever happens to the pod runner.
        _call(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")
        os.execvpe(plan["argv"][0], plan["argv"], plan["env"])
    except (OSError, SandboxError) as error:
        message = (
            str(error)
            if isinstance(error, SandboxError)
            else (f'exec: "{plan["argv"][0]}": {error.strerror}')
        )
        os.write(status_w, message.encode()[:4000])
    os._exit(127)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _report(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _copy_output(streams: dict[int, str], log_path: str) -> None:
    """Write the process's output as CRI log lines until both pipes close."""
    selector = selectors.DefaultSelector()
    pending = {fd: b"" for fd in streams}
    for fd in streams:
        selector.register(fd, selectors.EVENT_READ)
    with open(log_path, "ab", buffering=0) as log:
        while pending:
            for key, _ in selector.select():
                fd = key.fd
                data = os.read(fd, LOG_CHUNK)
                stream = streams[fd].encode()
                if not data:
                    if pending[fd]:
                        log.write(b"%s %s P %s\n" % (_now().encode(), stream, pending[fd]))
                    selector.unregister(fd)
                    os.close(fd)
                    del pending[fd]
                    continue
                *lines, pending[fd] = (pending[fd] + data).split(b"\n")
                stamp = _now().encode()
                for line in lines:
                    log.write(b"%s %s F %s\n" % (stamp, stream, line))
                if len(pending[fd]) >= LOG_CHUNK:
                    log.write(b"%s %s P %s\n" % (stamp, stream, pending[fd]))
                    pending[fd] = b""


def run(plan: dict[str, Any], runner_pid: int, workdir: str) -> int:
    """Set up, start and supervise the container; return the exit code to exit with."""
    _call(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")
    if os.getppid() != runner_pid:
        return START_ERROR_EXIT  # the runner is already gone
    child = 0

    def forward(signum: int, frame: Any) -> None:
        if child:
            os.kill(child, signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    try:
        _enter_namespaces(plan["uid"], plan["gid"], plan["hostname"])
        build_root(plan, workdir)
        _call(_libc.unshare(CLONE_NEWPID), "unshare(pid)")
    except (OSError, SandboxError) as error:
        _report({"error": str(error)})
        return START_ERROR_EXIT
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    status_r, status_w = os.pipe2(os.O_CLOEXEC)
    child = os.fork()
    if child == 0:
        os.close(out_r)
        os.close(err_r)
        os.close(status_r)
        _child(plan, out_w, err_w, status_w)
    for fd in (out_w, err_w, status_w):
        os.close(fd)
    with os.fdopen(status_r, "rb") as status:
        failure = status.read()
    if failure:
        os.waitpid(child, 0)
        _report({"error": failure.decode(errors="replace")})
        return START_ERROR_EXIT
    _report({"started": _now()})
    _copy_output({out_r: "stdout", err_r: "stderr"}, plan["log"])
    code = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
    return code if code >= 0 else 128 - code


def probe(workdir: str) -> str | None:
    """Why containers cannot be sandboxed here (no user namespaces, say), or None: tried for
    real with `true`."""
    os.makedirs(workdir + "/rootfs", exist_ok=True)
    plan = {
        "argv": ["true"],
        "env": {"PATH": "/usr/bin:/bin"},
        "cwd": "/",
        "uid": 65534,
        "gid": 65534,
        "groups": [],
        "hostname": "probe",
        "no_new_privs": True,
        "read_only_root": True,
        "host_paths": ["/usr", "/bin", "/lib", "/lib64", "/etc"],
        "mounts": [],
        "etc": {},
        "root": workdir + "/rootfs",
        "log": workdir + "/log",
    }
    with open(workdir + "/plan.json", "w") as f:
        json.dump(plan, f)
    result = subprocess.run(
        [sys.executable, "-m", MODULE, workdir + "/plan.json", str(os.getpid())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode == 0:
        return None
    said = (
        result.stdout.strip().splitlines()[-1:]
        or result.stderr.strip().splitlines()[-1:]
        or ["no output"]
    )
    return f"sandboxed processes cannot start here ({said[0][:300]})"


def main(argv: list[str]) -> int:
    plan_path, runner_pid = argv[0], int(argv[1])
    with open(plan_path) as f:
        plan = json.load(f)
    return run(plan, runner_pid, os.path.dirname(plan_path))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
