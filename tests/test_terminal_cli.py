"""The CLI where a terminal, a pager, signals or exit codes matter: real ``tilebox`` processes,
on a pseudo-terminal (``pty``) or on pipes, against a real server."""

from __future__ import annotations

import fcntl
import os
import pty
import queue
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import ServerProcess
from tests.tasks_fixture import Flaky, Leaf
from tests.waiting import wait_for
from tilebox_core import Client
from tilebox_core.domain import control
from tilebox_core.domain.events import ClusterCreated, Event, Origin
from tilebox_core.domain.projection import ControlState

TILEBOX = str(Path(sys.executable).parent / "tilebox")

# What these tests check is the command line, not the store: the embedded Valkey suffices.
pytestmark = pytest.mark.parametrize("server", ["valkey"], indirect=True)


@pytest.fixture
def env(server: ServerProcess, team: str, tmp_path: Path) -> dict[str, str]:
    values = {k: v for k, v in os.environ.items()
              if not k.startswith("TILEBOX_") and k not in ("NO_COLOR", "PAGER", "LINES", "COLUMNS")}  # fmt: skip
    values.update(TILEBOX_REDIS_URL=server.url, TILEBOX_TEAM=team,
                  TILEBOX_HOME=str(tmp_path / "home"), TERM="xterm")  # fmt: skip
    return values


def on_terminal(
    args: list[str], env: dict[str, str], answer: str | None = None, rows: int = 50,
    timeout: float = 30,
) -> tuple[int, str]:  # fmt: skip
    """Run ``tilebox args`` with stdin, stdout and stderr on a pseudo-terminal of ``rows`` rows;
    type ``answer`` once a ``[y/N]`` prompt appears. Returns the exit code and all it printed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, 120, 0, 0))
    process = subprocess.Popen([TILEBOX, *args], stdin=slave, stdout=slave, stderr=slave,
                               env=env, start_new_session=True)  # fmt: skip
    os.close(slave)
    output = b""
    deadline = time.monotonic() + timeout
    answered = answer is None
    try:
        while True:
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"no output within {timeout} s: {output!r}"
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every process holding the terminal has closed it
                break
            if not chunk:
                break
            output += chunk
            if not answered and b"[y/N]" in output:
                os.write(master, answer.encode() + b"\n")  # type: ignore[union-attr]
                answered = True
        return process.wait(timeout), output.decode(errors="replace").replace("\r\n", "\n")
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
            process.wait()


def off_terminal(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TILEBOX, *args], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


# --- confirmations ----------------------------------------------------------------------------


def test_cluster_delete_asks_on_a_terminal_and_never_off_it(
    client: Client, env: dict[str, str]
) -> None:
    for slug in ("kept", "piped", "forced"):
        client.clusters().create(slug)
    code, out = on_terminal(["cluster", "delete", "kept"], env, answer="n")
    assert code == 1
    assert (
        "Delete cluster kept (it is empty)? [y/N]" in out and "aborted; nothing was changed" in out
    )
    assert "kept" in client.state().clusters

    piped = off_terminal(["cluster", "delete", "piped"], env)  # stdin is not a terminal
    assert piped.returncode == 0 and piped.stdout == "deleted cluster piped\n"
    assert "[y/N]" not in piped.stderr

    code, out = on_terminal(["cluster", "delete", "forced", "--yes"], env)
    assert code == 0 and "[y/N]" not in out and "deleted cluster forced" in out
    code, out = on_terminal(["cluster", "delete", "kept"], env, answer="y")
    assert code == 0 and "deleted cluster kept" in out
    assert set(client.state().clusters) == {"default"}


def test_undeploy_and_cancel_ask_on_a_terminal(
    client: Client, env: dict[str, str], tmp_path: Path
) -> None:
    from tests.test_operator_cli import deploy_leaf

    release = deploy_leaf(client)
    code, out = on_terminal(["workflow", "undeploy-release", "--workflow", "leafs"], env, "n")
    assert code == 1 and f"Undeploy leafs from default ({release})? [y/N]" in out
    assert client.deployments().current() == {"default": {"leafs": release}}

    job = client.jobs().submit("c", Leaf("x"))
    code, out = on_terminal(["job", "cancel", job.id], env, answer="n")
    assert code == 1 and f"Cancel job {job.id} (c: 1 queued)? [y/N]" in out
    assert client.jobs().find(job.id).state == "queued"
    code, out = on_terminal(["job", "cancel", job.id, "--json"], env, answer="y")
    assert code == 0 and client.jobs().find(job.id).state == "cancelled"

    undeployed = off_terminal(["workflow", "undeploy-release", "--workflow", "leafs"], env)
    assert undeployed.returncode == 0 and client.deployments().current() == {}


def test_job_delete_and_team_delete_ask_on_a_terminal_and_never_off_it(
    client: Client, env: dict[str, str], server: ServerProcess, team: str
) -> None:
    job = client.jobs().submit("d", Leaf("x"))
    client.jobs().cancel(job)
    code, out = on_terminal(["job", "delete", job.id], env, answer="n")
    assert code == 1 and f"Delete job {job.id} (d, cancelled: 1 cancelled)? [y/N]" in out
    assert client.jobs().find(job.id).removed_at is None
    code, out = on_terminal(["job", "delete", job.id], env, answer="y")
    assert code == 0 and f"deleted job {job.id}" in out
    assert client.jobs().find(job.id).removed_reason == "deleted"
    queued = client.jobs().submit("q", Leaf("y"))
    code, out = on_terminal(["job", "delete", queued.id], env)  # refused before any question
    assert code == 1 and "[y/N]" not in out and "is queued: cancel it first" in out
    piped = off_terminal(["job", "delete", queued.id, "--force"], env)
    assert piped.returncode == 0 and "[y/N]" not in piped.stderr
    assert client.jobs().find(queued.id).removed_reason == "deleted"

    other = team + "-x"
    with Client(server.url, team=other, actor="user:admin") as admin:
        users = admin.teams().create(other).users
    code, out = on_terminal(["team", "delete", other], env, answer="n")
    assert code == 1 and f"Disable every user of team {other} (its data is kept)? [y/N]" in out
    assert all(u.enabled for u in client.teams().find(other).users)
    piped = off_terminal(["team", "delete", other], env)
    assert piped.returncode == 0 and "[y/N]" not in piped.stderr
    assert not any(u.enabled for u in client.teams().find(other).users)
    with server.redis_client() as direct:
        direct.execute_command("ACL", "DELUSER", *users)


# --- colour and pager -------------------------------------------------------------------------


def test_states_are_coloured_on_a_terminal_unless_no_color(
    client: Client, env: dict[str, str], tmp_path: Path
) -> None:
    client.jobs().submit("done", Leaf("a"))
    client.runner(tasks=[Leaf], cache_root=tmp_path).run_all()
    client.jobs().submit("broken", Flaky("b"))
    client.runner(tasks=[Flaky], cache_root=tmp_path).run_all()
    code, out = on_terminal(["job", "list"], env)
    assert code == 0
    assert "\x1b[32mcompleted\x1b[0m" in out and "\x1b[31mfailed\x1b[0m" in out
    # the escape codes do not shift the columns: without them the table is the plain one
    plain = off_terminal(["job", "list"], env).stdout
    assert out.replace("\x1b[32m", "").replace("\x1b[31m", "").replace("\x1b[0m", "") == plain
    code, no_color = on_terminal(["--no-color", "job", "list"], env)
    assert code == 0 and no_color == plain
    code, no_color = on_terminal(["job", "list"], {**env, "NO_COLOR": "1"})
    assert code == 0 and no_color == plain


def test_long_lists_use_a_pager_on_a_terminal_only(client: Client, env: dict[str, str]) -> None:
    client.jobs().submit_many((f"job-{i}", Leaf(str(i))) for i in range(12))
    paged = {**env, "PAGER": "sed s/^/paged:/"}
    code, out = on_terminal(["job", "list"], paged, rows=8)
    assert code == 0
    assert out.count("paged:") == 13 and out.splitlines()[0].startswith("paged:ID")
    code, short = on_terminal(["job", "list", "--limit", "3"], paged, rows=8)
    assert code == 0 and "paged:" not in short  # fits the screen: printed directly
    piped = off_terminal(["job", "list"], paged)
    assert piped.returncode == 0 and "paged:" not in piped.stdout
    assert len(piped.stdout.splitlines()) == 13


# --- waiting, following, runners --------------------------------------------------------------


class Lines:
    """The lines a process writes to a pipe, read by a thread, taken with a deadline."""

    def __init__(self, stream: object) -> None:
        self.queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.queue.put(line)

    def until(self, text: str, timeout: float = 30) -> list[str]:
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while not any(text in line for line in seen):
            seen.append(self.queue.get(timeout=max(0.01, deadline - time.monotonic())))
        return seen


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        for stream in (process.stdout, process.stderr):
            if stream:
                stream.close()


def test_events_follow_prints_new_events_and_stops_on_sigterm(
    client: Client, env: dict[str, str], processes: list[subprocess.Popen[str]]
) -> None:
    client.clusters().create("before")
    follower = subprocess.Popen([TILEBOX, "events", "list", "--follow", "--json"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    processes.append(follower)
    out = Lines(follower.stdout)
    assert '"slug":"before"' in out.until('"ClusterCreated"')[-1]
    client.clusters().create("during")  # appended while it follows
    job = client.jobs().submit("live", Leaf("x"))  # the task log is followed too
    assert '"slug":"during"' in out.until('"ClusterCreated"')[-1]
    assert job.id in out.until('"JobSubmitted"')[-1]
    follower.send_signal(signal.SIGTERM)
    assert follower.wait(30) == 0


def test_submit_wait_off_a_terminal_says_why_it_waits_then_finishes(
    client: Client, env: dict[str, str], processes: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    waiter = subprocess.Popen(
        [TILEBOX, "job", "submit", "--name", "w", "--task", "test.Leaf", "--version", "v1.0",
         "--input", '{"label": "x"}', "--wait", "--diagnose-after", "0.2"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    processes.append(waiter)
    err = Lines(waiter.stderr)
    seen = err.until("still queued:")
    assert seen[0].startswith("warning: submitted, but it will wait: test.Leaf@v1.0: no release")
    assert "no release deployed on cluster 'default' provides task 'test.Leaf'" in seen[-1]
    client.runner(tasks=[Leaf], cache_root=tmp_path).run_all()  # now something runs it
    assert waiter.wait(30) == 0
    assert waiter.stdout is not None and "completed: 1 computed" in waiter.stdout.read()


def test_a_runner_stops_when_its_cluster_is_deleted_or_replaced(
    client: Client, env: dict[str, str], processes: list[subprocess.Popen[str]]
) -> None:
    for slug in ("qa", "dev"):
        client.clusters().create(slug)
    runners = {}
    for slug in ("qa", "dev"):
        runners[slug] = subprocess.Popen([TILEBOX, "runner", "start", "--cluster", slug], env=env,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        processes.append(runners[slug])
    wait_for(lambda: all(client.clusters().runners(s) for s in ("qa", "dev")))

    client.clusters().delete("qa")
    assert runners["qa"].wait(30) == 1
    assert runners["qa"].stderr is not None
    last = runners["qa"].stderr.read().strip().splitlines()[-1]
    assert last == (
        "Error: cluster 'qa' was deleted while this runner served it; the runner stopped: "
        "start one for a cluster that exists"
    )

    def replace(state: ControlState, origin: Origin) -> tuple[None, list[Event]]:
        deleted = control.delete_cluster(state, origin, "dev")
        return None, [*deleted, ClusterCreated(**origin.stamp(), slug="dev", name="Dev again")]

    client.decide(replace)  # one append: the runner never sees a moment without a "dev"
    assert runners["dev"].wait(30) == 1
    assert runners["dev"].stderr is not None
    assert (
        "cluster 'dev' was deleted and created again (a new cluster)"
        in runners["dev"].stderr.read()
    )
    assert client.clusters().runners("dev") == []  # it deregistered and serves nothing
