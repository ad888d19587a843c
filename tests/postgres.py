"""A real PostgreSQL (Debian's postgresql-15) for the tests, on the loopback.

`initdb` into a fresh temporary folder, `postgres` on a free port of 127.0.0.1 only (its unix
socket in that folder), ready once it accepts a connection; stopped by pid (SIGINT: fast
shutdown) and its folder removed. One server per pytest process (the `postgres` fixture,
session-scoped); `database` gives each test module a fresh database. A test may start a
server of its own (`start`) to stop and restart it.

PostgreSQL refuses to run as root, and the tests run as root here: the server and initdb then
run as the existing unprivileged user `nobody` (Popen's user/group; nothing is created), in a
folder under /tmp handed to nobody (pytest's own tmp folders are root's, mode 0700, which
nobody cannot enter). Run as anyone else, the server runs as that user. Local trust
authentication: only the loopback and the folder's socket reach it, and its data is test data.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiinfn_dev.devcluster.processes import free_port

BIN = Path("/usr/lib/postgresql/15/bin")
SUPERUSER = "aiinfn"
UNPRIVILEGED = "nobody"


@dataclass
class Postgres:
    folder: Path
    port: int
    process: subprocess.Popen | None = None

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq connection string (psycopg.connect)."""
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={dbname}"

    def url(self, dbname: str) -> str:
        """An SQLAlchemy URL with the psycopg 3 driver (Alembic)."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def log(self) -> str:
        path = self.folder / "postgres.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _account() -> dict:
    """Popen's user/group arguments: `nobody` when we are root, else nothing (ourselves)."""
    if os.geteuid() != 0:
        return {}
    try:
        user = pwd.getpwnam(UNPRIVILEGED)
    except KeyError:
        pytest.skip(f"PostgreSQL refuses root and there is no user {UNPRIVILEGED} to run it as")
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _environment() -> dict[str, str]:
    return {"PATH": f"{BIN}:/usr/bin:/bin", "LC_ALL": "C", "TZ": "UTC"}


def initdb() -> Postgres:
    """A new cluster in a fresh folder under /tmp, owned by the account that runs it."""
    binary = BIN / "initdb"
    if not binary.exists():
        pytest.skip("PostgreSQL 15 is not installed (Debian's postgresql-15)")
    folder = Path(tempfile.mkdtemp(prefix="aiinfn-postgres-"))
    account = _account()
    if account:
        os.chown(folder, account["user"], account["group"])
    subprocess.run(
        [binary, "-D", folder / "data", "-U", SUPERUSER, "--auth=trust", "--no-locale"]
        + ["--encoding=UTF8", "--no-sync", "--no-instructions"],
        check=True,
        capture_output=True,
        cwd=folder,
        env=_environment(),
        **account,
    )
    return Postgres(folder, free_port())


def start(server: Postgres) -> Postgres:
    """Start (or restart) the server on its port; wait until it accepts a connection."""
    with open(server.folder / "postgres.log", "ab") as log:
        server.process = subprocess.Popen(
            [BIN / "postgres", "-D", server.folder / "data", "-p", str(server.port)]
            + ["-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={server.folder}"]
            + ["-c", "fsync=off", "-c", "full_page_writes=off"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=server.folder,
            env=_environment(),
            start_new_session=True,
            **_account(),
        )
    ready = [BIN / "pg_isready", "-h", "127.0.0.1", "-p", str(server.port), "-U", SUPERUSER]
    deadline = time.monotonic() + 60
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


def create_database(server: Postgres) -> str:
    """A new empty database; its name."""
    name = f"test_{secrets.token_hex(6)}"
    subprocess.run(
        [BIN / "createdb", "-h", "127.0.0.1", "-p", str(server.port), "-U", SUPERUSER, name],
        check=True,
        capture_output=True,
    )
    return name


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """The pytest process's PostgreSQL (each xdist worker has its own)."""
    server = initdb()
    try:
        yield start(server)
    finally:
        remove(server)


@pytest.fixture(scope="module")
def database(postgres) -> str:
    """A fresh database for the test module (its name)."""
    return create_database(postgres)
