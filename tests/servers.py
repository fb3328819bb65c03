"""Real Redis and PostgreSQL servers for the tests, from the Debian packages.

Each is a child process on a free loopback port with its files in a temp dir; `stop()` ends
it (signal, wait, kill). `scripts/test.sh` installs the packages when they are missing.
PostgreSQL refuses to run as root: then initdb and postgres run as the `postgres` user, in a
data dir of their own under the system temp dir (pytest's temp dirs are private to root).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

INSTALL_HINT = "run `bash scripts/test.sh` (or apt-get install redis-server postgresql)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait(ready: Callable[[], bool], proc: subprocess.Popen, log: Path, what: str,
          timeout: float = 30.0) -> None:
    """Poll `ready()` until it is true; fail early (with the log) if the server exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        if ready():
            return
        time.sleep(0.02)
    _stop(proc, signal.SIGKILL)
    raise TimeoutError(f"{what} not ready within {timeout}s:\n{log.read_text(errors='replace')}")


# --- Redis ------------------------------------------------------------------------------------

@dataclass
class RedisServer:
    url: str  # redis://127.0.0.1:PORT/0
    proc: subprocess.Popen
    port: int

    def stop(self) -> None:
        _stop(self.proc)


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(tmpdir: Path) -> RedisServer:
    binary = shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server") if os.path.exists(p)), None)
    if binary is None:
        raise RuntimeError(f"redis-server not found: {INSTALL_HINT}")
    port = _free_port()
    log = Path(tmpdir) / "redis.log"
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(tmpdir), "--daemonize", "no", "--logfile", ""]
    with log.open("wb") as fh:
        proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    _wait(lambda: _redis_ping(port), proc, log, "redis-server")
    return RedisServer(f"redis://127.0.0.1:{port}/0", proc, port)


# --- PostgreSQL -------------------------------------------------------------------------------

def postgres_bin_dir() -> Path:
    """The directory holding initdb, postgres and psql: initdb on PATH (symlinks resolved, as
    Debian's /usr/bin entries are wrappers), else the newest /usr/lib/postgresql/*/bin."""
    on_path = shutil.which("initdb")
    if on_path:
        d = Path(on_path).resolve().parent
        if (d / "postgres").exists() and (d / "psql").exists():
            return d
    versions = [d for d in Path("/usr/lib/postgresql").glob("*/bin") if (d / "initdb").exists()]
    if not versions:
        raise RuntimeError(f"PostgreSQL server binaries not found: {INSTALL_HINT}")
    return max(versions, key=lambda d: [int(x) for x in re.findall(r"\d+", d.parent.name)] or [0])


@dataclass
class PostgresServer:
    port: int
    proc: subprocess.Popen
    bin_dir: Path
    base: Path  # data/ and sock/ live here
    owned_base: bool = field(default=False, repr=False)  # ours to delete on stop (root case)

    def psql(self, *sql: str, database: str = "postgres") -> str:
        """Run statements (each in its own transaction) through psql; their output."""
        out = subprocess.run(
            [str(self.bin_dir / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
             "-p", str(self.port), "-U", "postgres", "-d", database, *(a for s in sql for a in ("-c", s))],
            capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"psql failed: {out.stderr}")
        return out.stdout

    def create_database(self, name: str) -> str:
        """A fresh, empty database (dropped first if it exists); its URL."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ValueError(f"database name must be a lowercase identifier: {name!r}")
        self.psql(f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name}")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        _stop(self.proc, signal.SIGINT)  # "fast" shutdown; SIGTERM waits for clients to leave
        if self.owned_base:
            shutil.rmtree(self.base, ignore_errors=True)


def start_postgres(tmpdir: Path) -> PostgresServer:
    bin_dir = postgres_bin_dir()
    as_root = os.geteuid() == 0
    # As root, initdb/postgres run as `postgres`, which must reach the data dir.
    base = Path(tempfile.mkdtemp(prefix="faregate-pg-")) if as_root else Path(tmpdir)
    user = {"user": "postgres", "group": "postgres", "extra_groups": []} if as_root else {}
    try:
        return _start_postgres(bin_dir, base, Path(tmpdir) / "postgres.log", user, as_root)
    except BaseException:
        if as_root:
            shutil.rmtree(base, ignore_errors=True)
        raise


def _start_postgres(bin_dir: Path, base: Path, log: Path, user: dict, as_root: bool) -> PostgresServer:
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    if as_root:
        for p in (base, sock):
            shutil.chown(p, "postgres", "postgres")
    with log.open("wb") as fh:
        init = subprocess.run(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
             "--locale=C", "--no-sync"], stdout=fh, stderr=subprocess.STDOUT, **user)
    if init.returncode != 0:
        raise RuntimeError(f"initdb failed:\n{log.read_text(errors='replace')}")
    port = _free_port()
    with log.open("ab") as fh:
        proc = subprocess.Popen(
            [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(sock),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "max_connections=200"],
            stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **user)
    isready = [str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"]
    _wait(lambda: subprocess.run(isready).returncode == 0, proc, log, "postgres")
    return PostgresServer(port, proc, bin_dir, base, owned_base=as_root)
