"""Opening a checked connection to Redis/Valkey: the configured URL, a Redis Cluster, or the
embedded server; and ``Routes``, which send hand-packed commands to the node serving a key.

A cluster is named by ``redis+cluster://[user:password@]host:port[,host:port...]`` (or
``rediss+cluster://`` for TLS): seed nodes, from which the client learns the topology. A plain
``redis://`` URL of a node in cluster mode is taken as a cluster with that one seed. Seeds that
cannot be reached are skipped with a warning, as long as a reachable one reports a healthy cluster
(``cluster_state:ok``, every slot served); a seed that is not in cluster mode, or a cluster with
slots nobody serves, is refused.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, TypeAlias, TypeVar
from urllib.parse import quote, unquote, urlparse, urlsplit

import hiredis
import redis
import structlog
from redis import exceptions as rex
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import Connection, ConnectionPool
from redis.retry import Retry

from tilebox_core.domain.errors import InvalidInput, StoreUnavailable

from .errors import redacted, translated
from .server import EmbeddedServer

log = structlog.get_logger(__name__)

MIN_REDIS = (7, 0)
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
T = TypeVar("T")
# The client: one server, or a cluster (redis-py's cluster client follows MOVED/ASK itself).
Client: TypeAlias = "redis.Redis | RedisCluster"


def check_url(url: str) -> str:
    if url.startswith(CLUSTER_SCHEMES):
        cluster_seeds(url)
        return url
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise InvalidInput(
            f"unsupported Redis URL {redacted(url)!r}: use redis://, rediss://, unix:// or "
            "redis+cluster://host:port[,host:port...]"
        )
    try:
        parsed = urlparse(url)
        parsed.port  # noqa: B018 - parsing it is the check: urllib raises for a bad port
    except ValueError as exc:
        raise InvalidInput(
            f"invalid Redis URL {redacted(url)!r}: {exc}; write e.g. redis://host:6379/0"
        ) from None
    return url


class Seeds(NamedTuple):
    """What a cluster URL says: seed nodes, credentials, TLS."""

    nodes: list[tuple[str, int]]
    username: str | None
    password: str | None
    tls: bool


def cluster_seeds(url: str) -> Seeds:
    """The seeds of ``redis+cluster://[user:password@]host:port[,host:port...]``."""
    parts = urlsplit(url)
    shown = redacted(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    nodes = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidInput(
                f"cluster URL {shown!r}: {item.strip() or 'an empty node'!r} is not host:port; "
                "use redis+cluster://host:port[,host:port...]"
            )
        nodes.append((host.strip("[]"), int(port)))
    if parts.path not in ("", "/", "/0") or parts.query:
        unknown = parts.path if parts.path not in ("", "/", "/0") else f"?{parts.query}"
        raise InvalidInput(
            f"cluster URL {shown!r}: a cluster has database 0 only and takes no options "
            f"({unknown!r}); use redis+cluster://host:port[,host:port...]"
        )
    username, password = None, None
    if userinfo:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    return Seeds(nodes, username, password, url.startswith("rediss+"))


def with_credentials(url: str, user: str, secret: str) -> str:
    """``url`` connecting as ``user`` with password ``secret`` (any credentials it had replaced)."""
    scheme, _, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    hosts = netloc.rpartition("@")[2]
    return f"{scheme}://{quote(user, safe='')}:{quote(secret, safe='')}@{hosts}{slash}{path}"


def resolve_url(url: str | None, home: Path, user: str | None = None) -> str:
    """``url`` (checked), else the embedded server with its data under ``home`` (started when
    needed), logged in as ``user`` if it has that user's credentials, else as its admin."""
    if url:
        return check_url(url)
    return EmbeddedServer(home).ensure(user=user)


def connect(
    url: str, *, timeout: float, retries: int, backoff_base: float, backoff_cap: float
) -> Client:
    """A client for ``url`` whose server (every seed of a cluster) was checked to be Redis >= 7.0.

    Commands are retried with exponential backoff (the driver's own ``Retry``) on connection
    errors, so a restarting server (a failover, on a cluster) is ridden over; ``retries`` bounds
    how long. The numbers come from ``tilebox_core.settings.Settings``. The first answer of a single
    server is waited for ``timeout`` seconds once, not once per retry: a server that does not answer
    (``rediss://`` against a plain port never completes its handshake) is reported in seconds.
    """
    retry = Retry(ExponentialBackoff(cap=backoff_cap, base=backoff_base), retries)
    if url.startswith(CLUSTER_SCHEMES):
        return _connect_cluster(url, cluster_seeds(url), timeout, retry)
    try:
        tcp = {} if url.startswith("unix://") else {"socket_keepalive": True}
        first = Retry(
            ExponentialBackoff(cap=backoff_cap, base=backoff_base),
            retries,
            supported_errors=(redis.ConnectionError,),
        )
        client = redis.Redis.from_url(
            url, socket_connect_timeout=timeout, **tcp, retry=first,
            retry_on_error=[redis.ConnectionError],
        )  # fmt: skip
        info = client.info("server", "cluster")
    except (redis.RedisError, OSError) as exc:
        raise translated(exc, url, connecting=True) from exc
    check_version(info, url)
    if info.get("cluster_enabled") != 1:
        client.set_retry(retry)  # from now on, timeouts are ridden over too
        return client
    # A node of a cluster, named by a plain URL: the cluster, with it as the seed.
    options = client.get_connection_kwargs()
    client.close()
    seeds = Seeds([(str(options.get("host", "localhost")), int(options.get("port", 6379)))],
                  options.get("username"), options.get("password"), url.startswith("rediss://"))  # fmt: skip
    return _connect_cluster(url, seeds, timeout, retry)


def _connect_cluster(url: str, seeds: Seeds, timeout: float, retry: Retry) -> RedisCluster:
    shown = redacted(url)
    reachable: list[tuple[str, int]] = []
    unreachable: list[str] = []
    failure: BaseException | None = None
    for host, port in seeds.nodes:
        node = f"{host}:{port}"
        try:
            with redis.Redis(host=host, port=port, username=seeds.username,
                             password=seeds.password, ssl=seeds.tls, socket_timeout=timeout,
                             socket_connect_timeout=timeout) as probe:  # fmt: skip
                info = probe.info("server", "cluster")
                check_version(info, f"{node} of {shown}")
                if info.get("cluster_enabled") != 1:
                    raise StoreUnavailable(
                        f"{node} of cluster URL {shown} is not in cluster mode: use "
                        f"redis://{node} for a single server, or start it with cluster-enabled yes"
                    )
                state: Any = probe.execute_command("CLUSTER INFO")
        except (rex.AuthenticationError, rex.AuthorizationError, rex.ResponseError) as exc:
            raise translated(exc, url, connecting=True) from exc
        except (redis.RedisError, OSError) as exc:
            unreachable.append(node)
            failure = exc
            continue
        fields = _cluster_info(state)
        if fields.get("cluster_state") != "ok":
            assigned = fields.get("cluster_slots_assigned", "?")
            raise StoreUnavailable(
                f"Redis Cluster at {shown} is not serving every slot (cluster_state:"
                f"{fields.get('cluster_state', '?')} on {node}, {assigned} of 16384 slots "
                "assigned): assign the missing slots or wait for its failover, then retry"
            )
        reachable.append((host, port))
    if not reachable:
        assert failure is not None
        raise translated(failure, url, connecting=True) from failure  # type: ignore[arg-type]
    if unreachable:
        log.warning("cluster seed nodes unreachable; using the others", unreachable=unreachable,
                    using=[f"{h}:{p}" for h, p in reachable])  # fmt: skip
    try:
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in reachable],
            username=seeds.username, password=seeds.password, ssl=seeds.tls,
            socket_connect_timeout=timeout, socket_keepalive=True, retry=retry,
            require_full_coverage=True,
        )  # fmt: skip
    except (redis.RedisError, rex.RedisClusterException, OSError) as exc:
        raise StoreUnavailable(f"cannot use Redis Cluster at {shown}: {exc}") from exc


def _cluster_info(reply: Any) -> dict[str, str]:
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def check_version(info: dict[str, Any], url: str) -> None:
    text = str(info.get("redis_version", "0.0"))
    version = tuple(int(part) for part in re.findall(r"\d+", text)[:2])
    if version < MIN_REDIS:
        raise StoreUnavailable(
            f"Redis at {redacted(url)} is version {text}; tilebox needs Redis >= 7.0 or Valkey >= 7.2"
        )


def pack(*args: Any) -> bytes:
    """A command packed by hiredis (a third of what the driver's own packing costs)."""
    packed: bytes = hiredis.pack_command(args)
    return packed


def masters(client: Client) -> int:
    """How many masters serve the data: the cluster's primaries, else 1."""
    return len(client.get_primaries()) if isinstance(client, RedisCluster) else 1


# Errors after which a cluster's topology is read again and the command sent again: a slot
# moved (or is moving), a master failed over, a node went away.
_REROUTE = (
    rex.MovedError, rex.TryAgainError, rex.ClusterDownError, rex.ConnectionError,
    rex.TimeoutError, rex.SlotNotCoveredError,
)  # fmt: skip


class Routes:
    """Connection pools for commands sent by hand (hiredis-packed), by key: the one server's pool,
    or on a cluster the pool of the master serving the key's slot.

    ``call(key, send)`` runs ``send(connection)`` on a pooled connection of that node. On one
    server, a lost connection is ridden over by the client's retry policy, as any command's. On a
    cluster, a MOVED, TRYAGAIN, CLUSTERDOWN or lost connection refreshes the topology and sends
    again, with the client's backoff, and an ASK sends once to the node named, after ASKING."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.cluster: RedisCluster | None = client if isinstance(client, RedisCluster) else None

    def pool(self, key: str) -> ConnectionPool:
        cluster = self.cluster
        if cluster is None:
            return self.client.connection_pool  # type: ignore[union-attr]
        pool: ConnectionPool = cluster.get_redis_connection(
            cluster.get_node_from_key(key)
        ).connection_pool
        return pool

    def node(self, key: str) -> str:
        """The name of the node serving ``key`` (one name on a single server)."""
        if self.cluster is None:
            return ""
        return str(self.cluster.get_node_from_key(key).name)

    def call(self, key: str, send: Callable[[Connection], T]) -> T:
        asking: list[Any] = []  # the node an ASK named, for the next attempt

        def attempt() -> T:
            pool = self.pool(key)
            if asking:
                assert self.cluster is not None
                pool = self.cluster.get_redis_connection(asking.pop()).connection_pool
                with self.connection(pool) as connection:
                    connection.send_command("ASKING")
                    connection.read_response()
                    return send(connection)
            with self.connection(pool) as connection:
                try:
                    return send(connection)
                except rex.AskError as exc:
                    if isinstance(exc, rex.MovedError) or self.cluster is None:
                        raise
                    node = self.cluster.get_node(host=exc.host, port=exc.port)
                    asking.append(node or ClusterNode(exc.host, exc.port))
                    return attempt()

        return self.retrying(key, attempt, lambda: None)

    def retrying(self, key: str, run: Callable[[], T], reset: Callable[[], None]) -> T:
        """``run()`` (commands for ``key``'s node), again after a lost connection (and on a
        cluster after MOVED, TRYAGAIN, CLUSTERDOWN: with the topology read again), with the
        client's retry policy; ``reset()`` after each failure."""
        cluster = self.cluster
        if cluster is None:
            retry: Retry | None = self.client.get_retry()  # type: ignore[union-attr]
            return (retry or Retry(NoBackoff(), 0)).call_with_retry(run, lambda _: reset())
        failures = 0
        while True:
            try:
                return run()
            except _REROUTE as exc:
                reset()
                failures = self._reroute(exc, failures)

    def _reroute(self, error: Exception, failures: int) -> int:
        """Refresh the topology after ``error``; re-raise it once the retries are spent."""
        cluster = self.cluster
        assert cluster is not None
        retries = cluster.retry.get_retries()
        if failures >= retries:
            raise error
        failures += 1
        time.sleep(cluster.retry._backoff.compute(failures))
        with contextlib.suppress(redis.RedisError, rex.RedisClusterException, OSError):
            cluster.nodes_manager.initialize()
        return failures

    @contextlib.contextmanager
    def connection(self, pool: ConnectionPool) -> Iterator[Connection]:
        """A pooled connection; disconnected if the block fails, as a reply may still be in
        flight."""
        connection = pool.get_connection()
        try:
            yield connection
        except BaseException:
            connection.disconnect()
            raise
        finally:
            pool.release(connection)
