"""Release runners end to end: real `tilebox runner start` processes, real builds, real servers."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from tests.conftest import Cli
from tests.servers import ServerProcess
from tests.waiting import wait_for
from tilebox_core import Client
from tilebox_core.build.config import load_config
from tilebox_core.build.release import build_release
from tilebox_core.domain.events import ReleaseTask, TaskClaimed
from tilebox_core.redis.liveness import RunnerInfo

TILEBOX = str(Path(sys.executable).parent / "tilebox")

CONFIG = """
[workflow]
slug = "scenes"
runner = "scenes.runner:runner"

[build]
include = ["scenes/**/*.py"]

[targets.production]
clusters = ["prod-a", "prod-b"]
"""

RUNNER = """
import os
import time

from tilebox_core import Task
from tilebox_runner import Runner

LABEL = "{label}"


def trace(what):
    with open(os.environ["TILEBOX_TEST_TRACE"], "a") as handle:
        handle.write(f"{{what}}-{{LABEL}}\\n")


class Fetch(Task):
    scene: str

    @staticmethod
    def identifier():
        return "scenes.Fetch", "v1.0"

    def execute(self, context):
        trace("fetch")
        first = context.submit_subtask(Process(self.scene))
        context.submit_subtask(Publish(self.scene), depends_on=[first])


class Process(Task):
    scene: str

    @staticmethod
    def identifier():
        return "scenes.Process", "{process_version}"

    def execute(self, context):
        trace("process")
{process_body}


class Publish(Task):
    scene: str

    @staticmethod
    def identifier():
        return "scenes.Publish", "v1.0"

    def execute(self, context):
        trace("publish")


runner = Runner(tasks=[Fetch, Process, Publish])
"""


def indent(body: str) -> str:
    return "\n".join("        " + line for line in body.strip().splitlines())


class Story:
    """A workflow project on disk, a client, and release runner processes (stopped at teardown)."""

    def __init__(self, server: ServerProcess, team: str, tmp: Path) -> None:
        self.tmp = tmp
        self.trace = tmp / "trace"
        self.trace.touch()
        self.client = Client(server.url, team=team, retries=20)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TILEBOX_")}
        self.env.update(TILEBOX_REDIS_URL=server.url, TILEBOX_TEAM=team,
                        TILEBOX_HOME=str(tmp / "home"), TILEBOX_TEST_TRACE=str(self.trace))  # fmt: skip
        self.cli = Cli(server.url, team)
        self.runners: list[subprocess.Popen[str]] = []
        self.client.workflows().create("scenes")

    def publish(
        self, label: str, process_version: str = "v1.0", process_body: str = "pass",
        extra_files: dict[str, str] | None = None,
    ) -> str:  # fmt: skip
        project = self.tmp / f"project-{label}"
        (project / "scenes").mkdir(parents=True)
        config = CONFIG
        for name, text in (extra_files or {}).items():
            (project / name).write_text(text)
            config = config.replace("include = [", f'include = ["{name}", ')
        (project / "tilebox.workflow.toml").write_text(config)
        (project / "scenes" / "__init__.py").write_text("")
        runner = RUNNER.format(label=label, process_version=process_version,
                               process_body=indent(process_body))  # fmt: skip
        (project / "scenes" / "runner.py").write_text(runner)
        built = build_release(load_config(project / "tilebox.workflow.toml"))
        return (
            self.client.workflows()
            .publish_release(
                built.workflow, built.artifact_path.read_bytes(), built.tasks, runner=built.runner
            )
            .release.id
        )

    def deploy(self, release_id: str, *clusters: str) -> None:
        self.client.workflows().deploy_release(release_id, clusters=clusters)

    def start_runner(self, cluster: str = "default", *extra: str) -> subprocess.Popen[str]:
        """``tilebox runner start --cluster CLUSTER [extra...]``, once it is registered live."""
        process = subprocess.Popen([TILEBOX, "runner", "start", "--cluster", cluster, *extra],
                                   env=self.env, stderr=subprocess.PIPE, text=True)  # fmt: skip
        self.runners.append(process)
        wait_for(lambda: any(r.id for r in self.live(cluster)) or process.poll() is not None)
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        return process

    def live(self, cluster: str) -> list[RunnerInfo]:
        return self.client.clusters().runners(cluster)

    def traced(self) -> list[str]:
        return self.trace.read_text().split()

    def claims(self, job_id: str) -> list[TaskClaimed]:
        return [s.event for s in self.client.tasks.replay()
                if isinstance(s.event, TaskClaimed) and s.event.job_id == job_id]  # fmt: skip

    def state(self, job_id: str) -> str:
        return self.client.jobs().find(job_id).state

    def close(self) -> None:
        for process in self.runners:
            runtimes = children(process.pid)  # their own sessions: not killed with the runner
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)  # drains its runtime processes
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
            for pid in runtimes:  # a failed test may leave one running a task that never ends
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if process.stderr:
                process.stderr.close()
        self.client.close()


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


def gone(pid: int) -> bool:
    """``pid`` has exited (a zombie counts: its parent was killed, nobody reaps it at once)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")


@pytest.fixture
def story(private_server: ServerProcess, team: str, tmp_path: Path) -> Iterator[Story]:
    s = Story(private_server, team, tmp_path)
    yield s
    s.close()


def test_seed_story_failed_job_is_retried_after_a_compatible_fix(story: Story) -> None:
    seed_story(story)


@pytest.fixture
def cluster_story(server: ServerProcess, team: str, tmp_path: Path) -> Iterator[Story]:
    s = Story(server, team, tmp_path)
    yield s
    s.close()


@pytest.mark.cluster(only=True)
def test_seed_story_on_a_cluster(cluster_story: Story) -> None:
    seed_story(cluster_story)  # a release runner on a Valkey Cluster, end to end


def seed_story(story: Story) -> None:
    broken = story.publish("v10", "v1.0", 'raise RuntimeError("bug in v1.0")')
    story.deploy(broken)
    story.start_runner()
    job = story.client.jobs().submit_by_name("scene-42", "scenes.Fetch", "v1.0", '{"scene": "42"}')
    wait_for(lambda: story.state(job.id) == "failed")
    assert story.traced() == ["fetch-v10", "process-v10"]

    fixed = story.publish("v11", "v1.1", "pass")  # same major, higher minor, same input schema
    story.deploy(fixed)
    # Retried once the runner serves only the fix: until then the broken release, still loaded,
    # may claim the re-queued task (a retry right after a deploy races the runner's reload).
    wait_for(lambda: [(s.release_id, s.status) for r in story.live("default") for s in r.releases]
             == [(fixed, "running")])  # fmt: skip
    assert "re-queued 1 failed task" in story.cli("job", "retry", job.id).output
    wait_for(lambda: story.state(job.id) == "completed")
    # Fetch (finished before the failure) was not rerun; the fix ran Process, then Publish.
    assert story.traced() == ["fetch-v10", "process-v10", "process-v11", "publish-v11"]
    releases = [(c.task_id, c.release_id) for c in story.claims(job.id)]
    assert releases[0][1] == broken and releases[-1][1] == fixed


def test_clusters_run_different_releases_and_targets_deploy_to_several(
    story: Story, monkeypatch: pytest.MonkeyPatch
) -> None:
    for slug in ("dev", "prod-a", "prod-b"):
        story.client.clusters().create(slug)
    stable = story.publish("stable")
    candidate = story.publish("candidate")
    story.deploy(candidate, "dev")
    monkeypatch.chdir(story.tmp / "project-stable")  # its tilebox.workflow.toml defines the target
    story.cli("workflow", "deploy-release", "--release", stable, "--target", "production")
    assert story.client.deployments().current() == {
        "dev": {"scenes": candidate}, "prod-a": {"scenes": stable}, "prod-b": {"scenes": stable},
    }  # fmt: skip
    story.start_runner("dev")
    story.start_runner("prod-a")
    on_dev = story.client.jobs().submit_by_name(
        "d", "scenes.Fetch", "v1.0", '{"scene": "1"}', "dev"
    )
    on_prod = story.client.jobs().submit_by_name(
        "p", "scenes.Fetch", "v1.0", '{"scene": "2"}', "prod-a"
    )
    wait_for(lambda: story.state(on_dev.id) == story.state(on_prod.id) == "completed")
    assert {c.release_id for c in story.claims(on_dev.id)} == {candidate}
    assert {c.release_id for c in story.claims(on_prod.id)} == {stable}


def test_a_job_waits_for_its_deployment_and_other_clusters_never_claim(story: Story) -> None:
    story.client.clusters().create("other")
    release = story.publish("r1")
    story.start_runner()
    here = story.client.jobs().submit_by_name("here", "scenes.Fetch", "v1.0", '{"scene": "1"}')
    elsewhere = story.client.jobs().submit_by_name(
        "x", "scenes.Fetch", "v1.0", '{"scene": "2"}', "other"
    )
    newer = story.client.jobs().submit_by_name("v2", "scenes.Fetch", "v2.0", '{"scene": "3"}')
    reasons = story.client.jobs().why_queued(story.client.jobs().find(here.id))
    assert (
        reasons
        and "no release deployed on cluster 'default' provides task 'scenes.Fetch'" in reasons[0]
    )

    story.deploy(release)  # the running release runner picks it up without a restart
    wait_for(lambda: story.state(here.id) == "completed")
    assert story.state(elsewhere.id) == "queued" and story.claims(elsewhere.id) == []
    (reason,) = story.client.jobs().why_queued(story.client.jobs().find(newer.id))
    assert "only incompatible versions are deployed on cluster 'default' (v1.0)" in reason
    story.deploy(release, "other")
    (reason,) = story.client.jobs().why_queued(story.client.jobs().find(elsewhere.id))
    assert "no live runner serves cluster 'other'" in reason
    text = story.cli("job", "get", elsewhere.id).output
    assert "waiting   scenes.Fetch@v1.0: no live runner serves cluster 'other'" in text


def test_undeploy_stops_new_claims_while_in_flight_work_finishes(story: Story) -> None:
    marker = story.tmp / "release-process"
    release = story.publish("slow", "v1.0", f"""
import pathlib
pathlib.Path({str(marker)!r}).touch()
while pathlib.Path({str(marker)!r}).exists():
    time.sleep(0.02)
""")  # fmt: skip
    story.deploy(release)
    runner = story.start_runner()
    job = story.client.jobs().submit_by_name("slow", "scenes.Fetch", "v1.0", '{"scene": "1"}')
    wait_for(marker.exists)  # Process is running
    story.client.workflows().undeploy_release("scenes")
    later = story.client.jobs().submit_by_name("later", "scenes.Fetch", "v1.0", '{"scene": "2"}')
    wait_for(lambda: all(s.status != "running" for r in story.live("default") for s in r.releases)
             or not story.live("default")[0].releases)  # fmt: skip
    marker.unlink()  # let the in-flight task finish
    wait_for(lambda: story.client.jobs().find(job.id).tasks[1].state == "computed")
    process = next(t for t in story.client.jobs().find(job.id).tasks if t.name == "scenes.Process")
    assert process.release_id == release
    tasks = {t.name: t.state for t in story.client.jobs().find(job.id).tasks}
    assert tasks == {
        "scenes.Fetch": "computed",
        "scenes.Process": "computed",
        "scenes.Publish": "queued",
    }
    assert story.state(later.id) == "queued" and story.claims(later.id) == []
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(30) == 0
    assert story.live("default") == []  # it deregistered


def test_sigterm_drains_in_flight_tasks_and_exits(story: Story) -> None:
    marker = story.tmp / "started"
    release = story.publish("drain", "v1.0", f"""
import pathlib
pathlib.Path({str(marker)!r}).touch()
time.sleep(1.0)
""")  # fmt: skip
    story.deploy(release)
    runner = story.start_runner()
    job = story.client.jobs().submit_by_name("drain", "scenes.Fetch", "v1.0", '{"scene": "1"}')
    wait_for(marker.exists)
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(30) == 0
    states = {t.name: t.state for t in story.client.jobs().find(job.id).tasks}
    assert states["scenes.Process"] == "computed"  # finished, not abandoned


@pytest.mark.slow
def test_a_release_runner_rides_out_a_server_restart(
    story: Story, private_server: ServerProcess
) -> None:
    """Bug: after a reconnect the runner re-read the deployments outside its retry, and exited with
    "lost the connection to Redis" though it had logged "retrying"."""
    running, gate = story.tmp / "running", story.tmp / "gate"
    release = story.publish("restart", "v1.0", f"""
import pathlib
pathlib.Path({str(running)!r}).touch()
while not pathlib.Path({str(gate)!r}).exists():
    time.sleep(0.02)
""")  # fmt: skip
    story.deploy(release)
    runner = story.start_runner()
    logged: list[str] = []

    def read_log() -> None:
        assert runner.stderr is not None
        for line in runner.stderr:
            logged.append(line)

    threading.Thread(target=read_log, daemon=True).start()
    job = story.client.jobs().submit_by_name("restart", "scenes.Fetch", "v1.0", '{"scene": "1"}')
    wait_for(running.exists)  # mid-job: Fetch is done, Process runs
    private_server.kill()  # kill -9

    # The runner keeps retrying (each round tries the server again) rather than stopping.
    def stopping() -> bool:
        return runner.poll() is not None or any("runner stopping" in line for line in logged)

    wait_for(lambda: sum("retrying" in line for line in logged) >= 3 or stopping())
    assert not stopping(), "".join(logged[-3:])
    private_server.start()  # the same port and AOF
    gate.touch()
    wait_for(lambda: story.state(job.id) == "completed")
    assert runner.poll() is None
    assert story.traced() == ["fetch-restart", "process-restart", "publish-restart"]
    assert {c.release_id for c in story.claims(job.id)} == {release}


def artifact(name: str) -> bytes:
    """A one-file artifact built by hand (so its member name can be hostile)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = 4
        tar.addfile(info, io.BytesIO(b"x=1\n"))
    return zstandard.ZstdCompressor().compress(raw.getvalue())


def test_hostile_or_broken_releases_are_reported_and_isolated(story: Story) -> None:
    good = story.publish("good")
    workflows = story.client.workflows()
    for slug in ("evil", "tampered", "broken"):
        workflows.create(slug)
    evil = workflows.publish_release("evil", artifact("../escape.py"), [ReleaseTask("e.T", "v1.0")],
                                     runner="m:r")  # fmt: skip
    tampered = workflows.publish_release("tampered", artifact("ok.py"), [ReleaseTask("t.T", "v1.0")],
                                         runner="ok:runner")  # fmt: skip
    # Corrupt the stored copy: its bytes no longer match the digest the release records.
    story.client.redis.lset(story.client.store.keys.artifact(tampered.release.digest), 0, b"junk")
    good_bytes = story.client.store.get_artifact(workflows.release(good).digest)
    broken = workflows.publish_release("broken", good_bytes, [ReleaseTask("b.T", "v1.0")],
                                       runner="scenes.missing:runner")  # fmt: skip
    for release in (good, evil.release.id, tampered.release.id, broken.release.id):
        story.deploy(release)
    story.start_runner()

    def statuses() -> dict[str, str]:
        live = story.live("default")
        return {s.workflow: f"{s.status}: {s.error}" for r in live for s in r.releases}

    wait_for(lambda: all(v.startswith("failed") for k, v in statuses().items() if k != "scenes")
             and len(statuses()) == 4)  # fmt: skip
    found = statuses()
    assert "not a safe relative path" in found["evil"]
    assert "digest mismatch" in found["tampered"]
    assert "failed to import its runner" in found["broken"] and "scenes.missing" in found["broken"]
    # The good release keeps running next to them.
    job = story.client.jobs().submit_by_name("ok", "scenes.Fetch", "v1.0", '{"scene": "1"}')
    wait_for(lambda: story.state(job.id) == "completed")
    assert not (story.tmp / "home" / "escape.py").exists()
    text = story.cli("cluster", "get", "default").output
    assert "evil" in text and "failed" in text


def tiny_wheel(directory: Path) -> Path:
    """A pure-Python wheel made by hand, so installing it needs no network and no build step."""
    import zipfile

    wheel = directory / "tinydep-1.0-py3-none-any.whl"
    files = {
        "tinydep/__init__.py": 'VALUE = "from-tinydep"\n',
        "tinydep-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: tinydep\nVersion: 1.0\n",
        "tinydep-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    files["tinydep-1.0.dist-info/RECORD"] = "".join(f"{name},,\n" for name in files) + (
        "tinydep-1.0.dist-info/RECORD,,\n"
    )
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return wheel


@pytest.mark.slow
def test_uv_environment_per_release_dependencies(story: Story) -> None:
    wheel = tiny_wheel(story.tmp)
    pyproject = (
        '[project]\nname = "scenes"\nversion = "0.1"\n'
        f'dependencies = ["tinydep @ {wheel.as_uri()}"]\n'
    )
    body = "import tinydep\ntrace(tinydep.VALUE)"
    first = story.publish("uv1", "v1.0", body, {"pyproject.toml": pyproject})
    story.deploy(first)
    story.start_runner("default", "--env", "uv")
    job = story.client.jobs().submit_by_name("deps", "scenes.Fetch", "v1.0", '{"scene": "1"}')
    wait_for(lambda: story.state(job.id) in ("completed", "failed"), 60)
    assert story.state(job.id) == "completed", story.client.clusters().runners("default")
    assert "from-tinydep-uv1" in story.traced()
    envs = list((story.tmp / "home" / "envs").iterdir())
    assert len(envs) == 1  # cached by the digest of pyproject.toml
    # A new release with the same dependencies reuses the environment.
    second = story.publish("uv2", "v1.0", body, {"pyproject.toml": pyproject})
    story.deploy(second)
    again = story.client.jobs().submit_by_name("deps2", "scenes.Fetch", "v1.0", '{"scene": "2"}')
    wait_for(lambda: story.state(again.id) == "completed", 60)
    assert "from-tinydep-uv2" in story.traced()
    assert list((story.tmp / "home" / "envs").iterdir()) == envs


def test_runtime_processes_do_not_outlive_a_killed_runner(story: Story) -> None:
    story.deploy(story.publish("orphan"))
    runner = story.start_runner()
    wait_for(lambda: any(s.status == "running" for r in story.live("default") for s in r.releases))
    pids = children(runner.pid)
    assert pids
    runner.kill()  # kill -9: no chance to stop its runtime processes itself
    runner.wait(10)
    wait_for(lambda: all(gone(pid) for pid in pids), 30)


def test_an_orphaned_runtime_whose_task_never_ends_exits_after_the_drain_timeout(
    story: Story,
) -> None:
    running = story.tmp / "running"
    release = story.publish("forever", "v1.0", f"""
import pathlib
pathlib.Path({str(running)!r}).touch()
while True:
    time.sleep(0.05)
""")  # fmt: skip
    story.deploy(release)
    runner = story.start_runner("default", "--drain-timeout", "1")
    story.client.jobs().submit_by_name("forever", "scenes.Fetch", "v1.0", '{"scene": "1"}')
    wait_for(running.exists)
    pids = children(runner.pid)
    assert pids
    runner.kill()  # kill -9: the runtime drains, but its task would never let it
    runner.wait(10)
    wait_for(lambda: all(gone(pid) for pid in pids), 30)


def test_a_crashing_runtime_is_reported_and_restarted(story: Story) -> None:
    marker = story.tmp / "crashed-once"
    release = story.publish("crash", "v1.0", f"""
import pathlib
if not pathlib.Path({str(marker)!r}).exists():
    pathlib.Path({str(marker)!r}).touch()
    os._exit(9)  # the runtime process dies in the middle of the task
""")  # fmt: skip
    story.deploy(release)
    story.start_runner("default", "--lease", "1")
    job = story.client.jobs().submit_by_name("crash", "scenes.Fetch", "v1.0", '{"scene": "1"}')

    def restarts() -> int:
        return max((s.restarts for r in story.live("default") for s in r.releases), default=0)

    wait_for(lambda: restarts() >= 1)
    (status,) = [s for r in story.live("default") for s in r.releases]
    assert "runtime exited [9]" in status.error
    # Restarted with backoff; the task's lease expired and the new runtime finished it.
    wait_for(lambda: story.state(job.id) == "completed")
    assert story.traced().count("process-crash") == 2


def test_stop_when_idling_with_json_output(story: Story) -> None:
    story.deploy(story.publish("idle"))
    job = story.client.jobs().submit_by_name("idle", "scenes.Fetch", "v1.0", '{"scene": "1"}')
    result = subprocess.run([TILEBOX, "runner", "start", "--json", "--stop-when-idling"],
                            env=story.env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    first = json.loads(result.stdout.splitlines()[0])
    assert first["cluster"] == "default" and first["runner_id"]
    assert story.state(job.id) == "completed"  # it ran what was queued, then stopped
