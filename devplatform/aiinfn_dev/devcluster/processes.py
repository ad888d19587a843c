"""Start, find and stop the cluster's local processes, always by pid.

A started process runs in its own session so it outlives the command that started it
(`aiinfn-devcluster up` returns while the cluster runs); the pid and the binary path are recorded
so that `down` never signals a pid that the kernel has reused for another program.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import DevClusterError


@dataclass(frozen=True)
class Running:
    """A process the harness started: enough to find it again and to stop it safely."""

    name: str
    pid: int
    binary: str

    def alive(self) -> bool:
        """True if the pid still runs our binary (not a zombie, not a reused pid)."""
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as stat:
                if stat.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    return False
            exe = os.readlink(f"/proc/{self.pid}/exe")
        except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
            return False
        return os.path.realpath(self.binary) == exe.removesuffix(" (deleted)")


def start(name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> Running:
    """Start argv detached from our terminal, output appended to log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    return Running(name=name, pid=proc.pid, binary=os.path.realpath(argv[0]))


def stop(processes: list[Running], grace: float = 10.0) -> None:
    """SIGTERM every live process, wait up to grace seconds, then SIGKILL what is left and wait
    until it is gone."""
    live = [p for p in processes if p.alive()]
    for proc in live:
        _signal(proc.pid, signal.SIGTERM)
    live = _wait_gone(live, grace)
    for proc in live:
        _signal(proc.pid, signal.SIGKILL)
    _wait_gone(live, 10.0)


def _wait_gone(live: list[Running], seconds: float) -> list[Running]:
    """Poll (reaping our own children) until the processes are gone; return those still alive."""
    deadline = time.monotonic() + seconds
    while live:
        _reap(live)
        live = [p for p in live if p.alive()]
        if not live or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return live


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _reap(processes: list[Running]) -> None:
    """Collect exit statuses of our own children so they do not linger as zombies."""
    for proc in processes:
        try:
            os.waitpid(proc.pid, os.WNOHANG)
        except ChildProcessError:
            pass


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on now, for a test's or the demo's hub, service
    or proxy; never the same one twice in a process, so two servers chosen for before either binds
    do not meet."""
    for port in random.sample(SERVER_PORTS, 256):
        if port not in _handed_out and bindable(port):
            _handed_out.add(port)
            return port
    raise DevClusterError(
        f"no free port between {SERVER_PORTS.start} and {SERVER_PORTS.stop} on 127.0.0.1"
    )


# free_port's range: below the clusters' API ports (16443 and up) and their blocks, and below the
# kernel's ephemeral range for the reason PORT_BLOCK_BASE gives. An ephemeral port (bind to 0)
# was taken once by an outgoing connection before the job service bound it.
SERVER_PORTS = range(10000, 16000)
_handed_out: set[int] = set()


# A cluster's components listen on a block of ports below the kernel's ephemeral range (32768 and
# up by default): between an ephemeral port's choice and the component's bind, an outgoing
# connection of any process may take it as its source port, and a cluster then failed to start
# ("address already in use") while others started beside it. The block follows
# from the cluster's API port, unique among running clusters, so clusters started at once take
# different blocks; a block some other program uses is skipped.
PORT_BLOCK_BASE = 20000
PORT_BLOCK_SIZE = 16
PORT_BLOCKS = 750


def bindable(port: int) -> bool:
    """Whether a listener can bind this loopback port now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class PortBlock:
    """The listening ports of one cluster's components, handed out in turn."""

    def __init__(self, api_port: int, bindable=bindable) -> None:
        for step in range(PORT_BLOCKS):
            first = PORT_BLOCK_BASE + (api_port + step) % PORT_BLOCKS * PORT_BLOCK_SIZE
            ports = list(range(first, first + PORT_BLOCK_SIZE))
            if all(bindable(port) for port in ports):
                self._free = ports
                return
        raise DevClusterError(
            f"no free block of {PORT_BLOCK_SIZE} ports between {PORT_BLOCK_BASE} and "
            f"{PORT_BLOCK_BASE + PORT_BLOCKS * PORT_BLOCK_SIZE} on 127.0.0.1"
        )

    def take(self) -> int:
        if not self._free:
            raise DevClusterError(f"a cluster needs more than {PORT_BLOCK_SIZE} ports")
        return self._free.pop(0)


def require_free(port: int, what: str, option: str) -> None:
    """Raise a one-line error if a program listens on port on 127.0.0.1.

    SO_REUSEADDR as the servers themselves set it: connections lingering in TIME_WAIT from an
    earlier run must not count as "in use"."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise DevClusterError(
                f"port {port} on 127.0.0.1 ({what}) is already in use by another program: "
                f"stop it (see `ss -ltnp 'sport = :{port}'`) or choose another port with {option}"
            ) from None


def log_tail(path: Path, lines: int = 5) -> str:
    """The last lines of a component log, for an error message."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return "(no log)"
    return " | ".join(line.strip() for line in text[-lines:])
