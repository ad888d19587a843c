"""A real PostgreSQL (Debian's postgresql-15, installed by ./dev) on the loopback: the tests'
(tests/postgres.py), the demo's and the accounting benchmark's.

`initdb` into a folder, `postgres` on a port of 127.0.0.1 only (its unix socket in that
folder), ready once `pg_isready` says so; stopped by pid (SIGINT: fast shutdown). Local trust
authentication: only the loopback and the folder's socket reach it.

PostgreSQL refuses to run as root: as root, initdb and the server run as the existing
unprivileged user `nobody` (Popen's user/group; nothing is created), in a folder handed to
nobody, which must be able to reach it (`reachable`: root's home, mode 0700, is not). Run as
anyone else, the server runs as that user.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .devcluster.processes import free_port

BIN = Path("/usr/lib/postgresql/15/bin")
SUPERUSER = "aiinfn"
UNPRIVILEGED = "nobody"


class Unavailable(RuntimeError):
    """PostgreSQL cannot run here (not installed, or root with no `nobody` to run it as)."""


@dataclass
class Postgres:
    folder: Path
    port: int
    process: subprocess.Popen | None = None

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq connection string (psycopg.connect)."""
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={dbname}"

    def url(self, dbname: str) -> str:
        """An SQLAlchemy URL with the psycopg 3 driver (Alembic, c.AiInfnAccounting)."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def log(self) -> str:
        path = self.folder / "postgres.log"
        return path.read_text(errors="replace") if path.exists() else ""


def account() -> dict:
    """Popen's user/group arguments: `nobody` when we are root, else nothing (ourselves)."""
    if os.geteuid() != 0:
        return {}
    try:
        user = pwd.getpwnam(UNPRIVILEGED)
    except KeyError:
        raise Unavailable(
            f"PostgreSQL refuses root and there is no user {UNPRIVILEGED} to run it as"
        ) from None
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def reachable(folder: Path) -> bool:
    """Whether the server's account can enter `folder`: every folder above it that exists is
    searchable by others (initdb makes the missing ones, searchable)."""
    if os.geteuid() != 0:
        return True
    above = [parent for parent in folder.resolve().parents if parent.exists()]
    return all(os.stat(parent).st_mode & stat.S_IXOTH for parent in above)


def _environment() -> dict[str, str]:
    return {"PATH": f"{BIN}:/usr/bin:/bin", "LC_ALL": "C", "TZ": "UTC"}


def initdb(folder: Path | None = None, port: int | None = None) -> Postgres:
    """A new cluster in `folder` (made here; default a fresh one under /tmp), owned by the
    account that runs it; the data in folder/data. A folder holding one already is reused."""
    binary = BIN / "initdb"
    if not binary.exists():
        raise Unavailable("PostgreSQL 15 is not installed (Debian's postgresql-15)")
    run_as = account()
    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix="aiinfn-postgres-"))
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if run_as:
        os.chown(folder, run_as["user"], run_as["group"])
    server = Postgres(folder, port or free_port())
    if (folder / "data" / "PG_VERSION").exists():
        return server
    subprocess.run(
        [str(binary), "-D", str(folder / "data"), "-U", SUPERUSER, "--auth=trust", "--no-locale"]
        + ["--encoding=UTF8", "--no-sync", "--no-instructions"],
        check=True,
        capture_output=True,
        cwd=folder,
        env=_environment(),
        **run_as,
    )
    return server


def start(server: Postgres, timeout: float = 60) -> Postgres:
    """Start (or restart) the server on its port; wait until it accepts a connection."""
    with open(server.folder / "postgres.log", "ab") as log:
        server.process = subprocess.Popen(
            [str(BIN / "postgres"), "-D", str(server.folder / "data"), "-p", str(server.port)]
            + ["-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={server.folder}"]
            + ["-c", "fsync=off", "-c", "full_page_writes=off"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=server.folder,
            env=_environment(),
            start_new_session=True,
            **account(),
        )
    ready = [str(BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(server.port), "-U", SUPERUSER]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"postgres exited: {server.log()[-3000:]}")
        if subprocess.run([*ready, "-t", "2"], capture_output=True).returncode == 0:
            return server
        time.sleep(0.1)
    stop(server)
    raise RuntimeError(f"postgres did not accept connections: {server.log()[-3000:]}")


def stop(server: Postgres, how: signal.Signals = signal.SIGINT) -> None:
    """Stop it by pid: SIGINT is a fast shutdown, SIGQUIT an immediate one (like a crash: WAL
    recovery at the next start). SIGKILL if it lingers."""
    process = server.process
    if process is None or process.poll() is not None:
        return
    os.kill(process.pid, how)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


def remove(server: Postgres) -> None:
    stop(server)
    shutil.rmtree(server.folder, ignore_errors=True)


def create_database(server: Postgres, name: str | None = None) -> str:
    """A new empty database (default a fresh name); its name. An existing one is kept."""
    name = name or f"test_{secrets.token_hex(6)}"
    command = [str(BIN / "createdb"), "-h", "127.0.0.1", "-p", str(server.port), "-U", SUPERUSER]
    command.append(name)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 and "already exists" not in done.stderr:
        raise RuntimeError(f"createdb {name} failed: {done.stderr.strip()}")
    return name
