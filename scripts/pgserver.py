"""A throwaway PostgreSQL server in a temporary directory, for the demo and the benchmarks.

Unix socket only (no TCP), trust authentication, superuser ``postgres``. Under root it runs as the
``postgres`` OS user (initdb and pg_ctl refuse to run as root). Stopping it removes the whole directory.

As a module::

    with PgServer.start(settings={"shared_buffers": "512MB"}) as server:
        psycopg.connect(server.conninfo("postgres"))

As a command (demo/run.sh)::

    eval "$(python scripts/pgserver.py start [--dir EMPTY_DIR] [--cron-database DB])"
        # exports PGHOST PGPORT PGUSER ML_STACK_PGDIR; --cron-database preloads pg_cron for database DB
    python scripts/pgserver.py stop "$ML_STACK_PGDIR"
"""

import argparse
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

SERVER_OS_USER = "postgres"  # the OS user the server runs as when we are root
DB_SUPERUSER = "postgres"
MARKER = ".ml_stack_pgserver"  # `stop` removes only a directory that `start` made

BASE_SETTINGS = {
    "listen_addresses": "",
    "max_connections": "20",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


def clean_env() -> dict:
    """The environment without variables that would steer libpq, pg_ctl or the server's Python."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PG", "PYTHON", "VIRTUAL_ENV"))}


def pg_bindir() -> Path:
    pg_config = os.environ.get("PG_CONFIG", "pg_config")
    out = subprocess.run([pg_config, "--bindir"], check=True, capture_output=True, text=True).stdout
    return Path(out.strip())


def free_port() -> int:
    """A port no one listens on. Only the socket file's name carries it (no TCP), but keep it unique anyway."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def terminate_on_signals():
    """Turn SIGTERM/SIGHUP into SystemExit, so that `finally` blocks stop the server and remove its files."""

    def handler(signum, _frame):
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


class PgServer:
    def __init__(self, basedir: Path, port: int, bindir: Path | None = None):
        self.basedir = Path(basedir)
        self.port = port
        self.bindir = bindir or pg_bindir()

    # -- layout -----------------------------------------------------------------------------------------------
    @property
    def datadir(self) -> Path:
        return self.basedir / "data"

    @property
    def host(self) -> str:
        """The socket directory (libpq takes a path as host)."""
        return str(self.basedir / "sock")

    @property
    def logfile(self) -> Path:
        return self.basedir / "server.log"

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"host={self.host} port={self.port} user={DB_SUPERUSER} dbname={dbname}"

    def env(self, dbname: str | None = None) -> dict:
        """Environment for client programs (psql, pg_dump, Python with libpq) to reach this server."""
        env = clean_env()
        env.update(PGHOST=self.host, PGPORT=str(self.port), PGUSER=DB_SUPERUSER)
        if dbname:
            env["PGDATABASE"] = dbname
        return env

    # -- life cycle -------------------------------------------------------------------------------------------
    def _run(self, cmd: list, what: str) -> None:
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", SERVER_OS_USER, "--", *cmd]
        # cwd: the server user may not be allowed into the caller's directory (e.g. /root/...)
        res = subprocess.run(cmd, cwd=self.basedir, env=clean_env(), capture_output=True, text=True)
        if res.returncode != 0:
            log = ""
            if self.logfile.exists():
                log = "\n--- server log (tail) ---\n" + "\n".join(self.logfile.read_text().splitlines()[-30:])
            raise RuntimeError(f"{what} failed ({res.returncode}): {' '.join(cmd)}\n{res.stdout}{res.stderr}{log}")

    @classmethod
    def start(cls, settings: dict | None = None, prefix: str = "ml_stack_server_",
              basedir: Path | None = None, extra_settings=None) -> "PgServer":
        """Start a server in a new temporary directory, or in ``basedir`` (an empty directory to use).
        ``extra_settings(server)`` adds settings that depend on the server's own paths or port."""
        if basedir is None:
            basedir = Path(tempfile.mkdtemp(prefix=prefix))
        elif any(Path(basedir).iterdir()):
            raise RuntimeError(f"{basedir} is not empty")
        basedir = Path(basedir)
        (basedir / MARKER).touch()
        server = cls(basedir, free_port())
        try:
            sockdir = Path(server.host)
            sockdir.mkdir()
            if os.geteuid() == 0:
                pw = pwd.getpwnam(SERVER_OS_USER)
                for d in (basedir, sockdir):
                    os.chown(d, pw.pw_uid, pw.pw_gid)
            server._run([str(server.bindir / "initdb"), "-D", str(server.datadir), "-A", "trust", "-U",
                         DB_SUPERUSER, "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"], "initdb")
            conf = {**BASE_SETTINGS, "unix_socket_directories": server.host, "port": str(server.port),
                    **(settings or {}), **(extra_settings(server) if extra_settings else {})}
            with open(server.datadir / "postgresql.conf", "a") as f:
                f.write("\n# ml_stack throwaway server (scripts/pgserver.py)\n")
                for key, value in conf.items():
                    f.write(f"{key} = '{value}'\n")
            server._run([str(server.bindir / "pg_ctl"), "-D", str(server.datadir), "-l", str(server.logfile),
                         "-w", "-t", "60", "-s", "start"], "pg_ctl start")
        except BaseException:
            server.stop()
            raise
        return server

    @classmethod
    def start_replica(cls, primary: "PgServer", prefix: str = "ml_stack_replica_") -> "PgServer":
        """A streaming hot standby of ``primary`` (``pg_basebackup -R``): a copy of its data directory as it is
        now, then every change by WAL; its own socket directory and port, read-only."""
        basedir = Path(tempfile.mkdtemp(prefix=prefix))
        (basedir / MARKER).touch()
        server = cls(basedir, free_port(), primary.bindir)
        try:
            sockdir = Path(server.host)
            sockdir.mkdir()
            if os.geteuid() == 0:
                pw = pwd.getpwnam(SERVER_OS_USER)
                for d in (basedir, sockdir):
                    os.chown(d, pw.pw_uid, pw.pw_gid)
            server._run([str(server.bindir / "pg_basebackup"), "-D", str(server.datadir), "-R", "-X", "stream", "-c", "fast",
                         "-h", primary.host, "-p", str(primary.port), "-U", DB_SUPERUSER, "--no-sync"], "pg_basebackup")
            with open(server.datadir / "postgresql.conf", "a") as f:   # the later lines win
                f.write(f"\n# the replica's own (scripts/pgserver.py)\nport = '{server.port}'\n"
                        f"unix_socket_directories = '{server.host}'\n")
            server._run([str(server.bindir / "pg_ctl"), "-D", str(server.datadir), "-l", str(server.logfile),
                         "-w", "-t", "60", "-s", "start"], "pg_ctl start (replica)")
        except BaseException:
            server.stop()
            raise
        return server

    def stop(self) -> None:
        """Stop the server if it runs, and remove its directory (both even when the other fails)."""
        try:
            if (self.datadir / "postmaster.pid").exists():
                self._run([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "-s",
                           "stop"], "pg_ctl stop")
        finally:
            shutil.rmtree(self.basedir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


@contextmanager
def ml_stack_database(settings: dict | None = None, prefix: str = "ml_stack_server_", dbname: str = "ml_stack"):
    """A throwaway server and an autocommit psycopg connection to a new database with ml_stack installed
    (NOTICEs off); both gone at the end. For the benchmarks."""
    import psycopg  # only the Python users of this module need it, not `pgserver.py start|stop`

    with PgServer.start(settings, prefix=prefix) as server:
        with psycopg.connect(server.conninfo("postgres"), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{dbname}"')
        with psycopg.connect(server.conninfo(dbname), autocommit=True) as conn:
            conn.execute("SET client_min_messages = warning")
            conn.execute("CREATE EXTENSION ml_stack")
            yield conn


def cron_settings(database: str) -> tuple:
    """Settings that preload pg_cron for ``database``, and the extra_settings callable that points its job
    connections at the server's socket directory (TCP is off): arguments for ``PgServer.start``."""
    return ({"shared_preload_libraries": "pg_cron", "cron.database_name": database},
            lambda server: {"cron.host": server.host})


def _parse_settings(pairs):
    settings = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"pgserver.py: --set takes key=value, got {pair!r}")
        settings[key] = value
    return settings


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_start = sub.add_parser("start", help="start a server; print shell export lines for it")
    p_start.add_argument("--set", action="append", metavar="KEY=VALUE", help="extra postgresql.conf setting")
    p_start.add_argument("--prefix", default="ml_stack_server_", help="name prefix of the temporary directory")
    p_start.add_argument("--dir", type=Path, help="an empty directory to use instead of a new temporary one")
    p_start.add_argument("--cron-database", metavar="DB",
                         help="preload pg_cron, running its jobs in database DB (created by the caller)")
    p_stop = sub.add_parser("stop", help="stop the server of DIR and remove DIR")
    p_stop.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    terminate_on_signals()

    if args.command == "start":
        settings, extra = cron_settings(args.cron_database) if args.cron_database else ({}, None)
        server = PgServer.start({**settings, **_parse_settings(args.set)}, prefix=args.prefix, basedir=args.dir,
                                extra_settings=extra)
        for key, value in (("ML_STACK_PGDIR", str(server.basedir)), ("PGHOST", server.host),
                           ("PGPORT", str(server.port)), ("PGUSER", DB_SUPERUSER)):
            print(f"export {key}={shlex.quote(value)}")
        return 0

    if not (args.dir / MARKER).exists():
        print(f"pgserver.py: {args.dir} is not a directory made by 'pgserver.py start'; left alone", file=sys.stderr)
        return 1
    PgServer(args.dir, port=0).stop()  # the port is not needed to stop it
    return 0


if __name__ == "__main__":
    sys.exit(main())
