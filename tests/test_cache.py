"""Job caches behave as Tilebox's: bytes under string keys, groups like directories (a group lists
only its direct keys, reading a group as a key is a KeyError), ``items()``; every backend passes
the same contract, the S3 cache against a real S3 API server (moto's, started on a free port)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from obstore.store import LocalStore, MemoryStore

from tests.servers import S3Server, ServerProcess
from tests.waiting import wait_for
from tilebox_core import (
    AzureBlobStorageCache,
    Client,
    ExecutionContext,
    GoogleStorageCache,
    InMemoryCache,
    InvalidInput,
    JobCache,
    LocalFileSystemCache,
    ObstoreCache,
    Runner,
    RunnerContext,
    Task,
)

BACKENDS = ["memory", "local", "obstore-memory", "obstore-local", "s3"]


@pytest.fixture(params=BACKENDS)
def cache(request: pytest.FixtureRequest, tmp_path: Path) -> JobCache:
    kind = request.param
    if kind == "memory":
        return InMemoryCache()
    if kind == "local":
        return LocalFileSystemCache(tmp_path / "cache")
    if kind == "obstore-memory":
        return ObstoreCache(MemoryStore())
    if kind == "obstore-local":
        (tmp_path / "store").mkdir()
        return ObstoreCache(LocalStore(tmp_path / "store"), prefix="jobs")
    s3: S3Server = request.getfixturevalue("s3")
    return s3.cache(s3.bucket())


def test_values_under_keys(cache: JobCache) -> None:
    assert "data" not in cache
    with pytest.raises(KeyError, match="data is not cached"):
        cache["data"]
    cache["data"] = b"my_binary_data_to_store"
    assert "data" in cache
    assert cache["data"] == b"my_binary_data_to_store"
    cache["data"] = b"replaced"
    assert cache["data"] == b"replaced"
    cache["text ü {x} 100%"] = bytearray(b"any characters")  # bytes-like is bytes
    assert cache["text ü {x} 100%"] == b"any characters"
    assert sorted(cache) == ["data", "text ü {x} 100%"]


def test_groups_are_like_directories(cache: JobCache) -> None:
    squares = cache.group("squares")
    for n in (12, 345, 453):
        squares[str(n)] = str(n * n).encode()
    cache["squares/21"] = b"441"  # a slash names a key of a group
    squares.group("nested")["deep"] = b"1"
    cache["top"] = b"t"
    # A group lists only its direct keys; a group is not a key.
    assert sorted(cache) == ["top"]
    assert sorted(squares) == ["12", "21", "345", "453"]
    assert sorted(cache.group("squares")) == sorted(squares)
    assert cache.group("squares").group("nested")["deep"] == cache["squares/nested/deep"] == b"1"
    assert "squares" not in cache and "squares/nested" not in cache
    for group_as_key in ("squares", "squares/nested"):
        with pytest.raises(KeyError):
            cache[group_as_key]
    assert dict(squares.items()) == {"12": b"144", "21": b"441", "345": b"119025", "453": b"205209"}
    # Below a value there is nothing: a KeyError, and an empty group, as in Tilebox.
    with pytest.raises(KeyError):
        cache["top/below"]
    assert "top/below" not in cache
    assert list(cache.group("top")) == []
    assert list(cache.group("never-written")) == []


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "../up", "a/../b", ".hidden", "a/"])
def test_bad_keys_are_refused_in_one_line(cache: JobCache, key: str) -> None:
    with pytest.raises(InvalidInput, match="invalid job cache key"):
        cache[key] = b"x"
    with pytest.raises(InvalidInput, match="invalid job cache key"):
        cache.group(key)
    assert list(cache) == []


def test_values_are_bytes(cache: JobCache) -> None:
    with pytest.raises(InvalidInput, match=r"is a str; store bytes \(for text: value.encode\(\)"):
        cache["n"] = "42"  # type: ignore[assignment]
    assert "n" not in cache


def test_an_s3_group_lists_past_one_page(s3: S3Server) -> None:
    """S3 lists 1,000 keys a page; a group's listing is every direct key, however many."""
    big = s3.cache(s3.bucket()).group("big")
    for i in range(1010):
        big[f"k{i:04d}"] = b"x"
    big["sub/deep"] = b"y"
    assert list(big) == [f"k{i:04d}" for i in range(1010)]


def test_object_store_caches_have_tilebox_names_and_prefixes(s3: S3Server) -> None:
    bucket = s3.bucket()
    cache = s3.cache(bucket, prefix="runs")
    cache.group("job-1")["result"] = b"r"
    # The object is where Tilebox puts it: <prefix>/<group>/<key> in the bucket.
    plain = ObstoreCache(cache.store)
    assert plain.group("runs").group("job-1")["result"] == b"r"
    assert cache.group("job-1").bucket == bucket  # a group is of the same class and bucket
    # GCS and Azure build their obstore stores (no server for them here: construction only).
    gcs = GoogleStorageCache("a-bucket", skip_signature=True)
    assert (gcs.bucket, str(gcs.prefix)) == ("a-bucket", "jobs")

    class Bucket:  # a google.cloud.storage Bucket, as Tilebox takes it: its name is used
        name = "from-object"

    assert GoogleStorageCache(Bucket(), skip_signature=True).bucket == "from-object"
    azure = AzureBlobStorageCache("container", account_name="acct", skip_signature=True)
    assert isinstance(azure.group("g"), AzureBlobStorageCache)
    assert str(azure.group("g").prefix) == "jobs/g"


# --- through a runner: context.job_cache is the job's group of the runner's cache --------------


class ProducerTask(Task):
    def execute(self, context: ExecutionContext) -> None:
        context.job_cache["data"] = b"my_binary_data_to_store"
        context.submit_subtask(ConsumerTask())


class ConsumerTask(Task):
    def execute(self, context: ExecutionContext) -> None:
        data = context.job_cache["data"]
        context.job_cache.group("seen")["consumer"] = data


def run_producer(client: Client, runner: Callable[[], object]) -> str:
    job = client.jobs().submit("testing-cache-access", ProducerTask())
    runner()
    assert client.jobs().find(job.id).state == "completed"
    return job.id


@pytest.mark.parametrize("kind", ["memory", "local", "s3"])
def test_a_runner_gives_each_job_its_group(client: Client, kind: str, tmp_path: Path,
                                           request: pytest.FixtureRequest) -> None:  # fmt: skip
    cache: JobCache
    if kind == "memory":
        cache = InMemoryCache()
    elif kind == "local":
        cache = LocalFileSystemCache(tmp_path / "cache")
    else:
        s3: S3Server = request.getfixturevalue("s3")
        cache = s3.cache(s3.bucket())
    tasks = [ProducerTask, ConsumerTask]
    first = run_producer(client, lambda: client.runner(tasks=tasks, cache=cache).run_all())
    second = run_producer(client, lambda: Runner(tasks, cache=cache).connect_to(client).run_all())
    for job_id in (first, second):  # each job's data in its own group: no clash between jobs
        assert cache.group(job_id)["data"] == b"my_binary_data_to_store"
        assert dict(cache.group(job_id).group("seen").items()) == {
            "consumer": b"my_binary_data_to_store"
        }
    assert list(cache) == []
    if kind == "local":
        assert (tmp_path / "cache" / first / "seen" / "consumer").is_file()


def test_the_default_cache_is_local_under_tilebox_home(client: Client, tmp_path: Path) -> None:
    job_id = run_producer(
        client, lambda: client.runner(tasks=[ProducerTask, ConsumerTask]).run_all()
    )
    home = client.settings.home
    assert (home / "cache" / "jobs" / job_id / "data").read_bytes() == b"my_binary_data_to_store"


class CountingContext(RunnerContext):
    made = 0

    def __init__(self) -> None:
        CountingContext.made += 1
        self.greeting = "hello from the runner"


class UsesRunnerContext(Task):
    n: int

    def execute(self, context: ExecutionContext) -> None:
        assert isinstance(context.runner_context, CountingContext)
        context.job_cache[str(self.n)] = context.runner_context.greeting.encode()
        context.job_cache[f"id-{self.n}"] = str(id(context.runner_context)).encode()


def test_one_runner_context_per_runner(client: Client) -> None:
    cache = InMemoryCache()
    CountingContext.made = 0
    job = client.jobs().submit("ctx", [UsesRunnerContext(1), UsesRunnerContext(2)])
    client.runner(tasks=[UsesRunnerContext], cache=cache, context=CountingContext).run_all()
    assert client.jobs().find(job.id).state == "completed"
    group = cache.group(job.id)
    assert group["1"] == group["2"] == b"hello from the runner"
    assert group["id-1"] == group["id-2"]  # the same object for every task
    assert CountingContext.made == 1
    # From a Runner definition too, as Tilebox's Runner(tasks=..., cache=..., context=...).
    job = client.jobs().submit("ctx", UsesRunnerContext(3))
    Runner(tasks=[UsesRunnerContext], cache=cache, context=CountingContext).connect_to(
        client
    ).run_all()
    assert cache.group(job.id)["3"] == b"hello from the runner"


def test_runner_arguments_are_checked(client: Client) -> None:
    with pytest.raises(
        TypeError, match=r"context must be a subclass of tilebox_core\.RunnerContext"
    ):
        Runner([ProducerTask], context=CountingContext())  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="either a runner or tasks, cache and context"):
        client.runner(tasks=[ProducerTask], runner=Runner([ConsumerTask]))


# --- a release runner: the cache and context of the Runner object a release names --------------

RELEASE_RUNNER = """
from tilebox_core import ExecutionContext, LocalFileSystemCache, RunnerContext, Task
from tilebox_runner import Runner


class Shared(RunnerContext):
    def __init__(self):
        self.greeting = "hello from the release's runner context"


class Produce(Task):
    @staticmethod
    def identifier():
        return "scenes.Produce", "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        context.job_cache["greeting"] = context.runner_context.greeting.encode()
        context.submit_subtask(Consume())


class Consume(Task):
    @staticmethod
    def identifier():
        return "scenes.Consume", "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        context.job_cache.group("seen")["consumer"] = context.job_cache["greeting"]


runner = Runner(tasks=[Produce, Consume], cache=LocalFileSystemCache({cache!r}), context=Shared)
"""


def test_a_release_runner_uses_its_runner_objects_cache_and_context(
    private_server: ServerProcess, team: str, tmp_path: Path
) -> None:
    from tests.test_release_runner import CONFIG, Story
    from tilebox_core.build.config import load_config
    from tilebox_core.build.release import build_release

    story = Story(private_server, team, tmp_path)
    try:
        project = tmp_path / "project"
        (project / "scenes").mkdir(parents=True)
        (project / "tilebox.workflow.toml").write_text(CONFIG)
        (project / "scenes" / "__init__.py").write_text("")
        shared = tmp_path / "shared-cache"
        (project / "scenes" / "runner.py").write_text(RELEASE_RUNNER.format(cache=str(shared)))
        built = build_release(load_config(project / "tilebox.workflow.toml"))
        release = story.client.workflows().publish_release(
            built.workflow, built.artifact_path.read_bytes(), built.tasks, runner=built.runner
        )
        story.deploy(release.release.id)
        story.start_runner()
        job = story.client.jobs().submit_by_name("cached", "scenes.Produce", "v1.0", "{}")
        wait_for(lambda: story.state(job.id) in ("completed", "failed"))
        assert story.state(job.id) == "completed"
        greeting = b"hello from the release's runner context"
        assert (shared / job.id / "greeting").read_bytes() == greeting
        assert (shared / job.id / "seen" / "consumer").read_bytes() == greeting
    finally:
        story.close()
