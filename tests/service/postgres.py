"""A real PostgreSQL server for tests: Debian's binaries, a private data folder, a free loopback port.

As root, the server runs as the `postgres` user (PostgreSQL refuses to run as root); its folder is then made
outside pytest's tmp (whose parents are private to root) and removed by `close`.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

USER = "postgres"  # the superuser initdb creates; trust auth on loopback and the private socket only


def bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: `apt-get install -y postgresql` (.ci/run does it)")
    return Path(found[-1]).parent


class PostgresServer:
    def __init__(self):
        self.bin = bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="reelgen-pg-"))
        self.data, self.sockets, self.log = self.root / "data", self.root / "sockets", self.root / "server.log"
        self.sockets.mkdir()
        self._as = []
        if os.geteuid() == 0:
            shutil.chown(self.root, USER, USER)
            shutil.chown(self.sockets, USER, USER)
            self._as = ["runuser", "-u", USER, "--"]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._run("initdb", "-D", str(self.data), "-U", USER, "-A", "trust", "-E", "UTF8", "--no-sync")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 60) -> PostgresServer:
        # fsync off: the tests restart the server, never the machine, and a crashed process loses nothing anyway
        options = (f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c full_page_writes=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-W", "start")
        deadline = time.monotonic() + timeout
        while subprocess.run([self.bin / "pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port)]).returncode:
            if time.monotonic() > deadline:
                raise AssertionError(f"PostgreSQL did not accept connections in {timeout}s:\n{self._log_tail()}")
            time.sleep(0.05)
        return self

    def stop(self, mode: str = "fast") -> None:
        """`fast` ends every session and shuts down cleanly; `immediate` is a crash (recovery at next start)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def create_database(self) -> str:
        """A new empty database -> its URL."""
        name = f"test_{uuid.uuid4().hex[:12]}"
        engine = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT")  # CREATE DATABASE refuses transactions
        with engine.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return self.url(name)

    def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        result = subprocess.run([*self._as, str(self.bin / program), *args], capture_output=True, text=True,
                                cwd=self.root)
        if result.returncode:
            raise AssertionError(f"{program} failed ({result.returncode}): {result.stderr}\n{self._log_tail()}")

    def _log_tail(self) -> str:
        return self.log.read_text()[-3000:] if self.log.exists() else ""
