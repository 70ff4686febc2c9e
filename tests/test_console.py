"""`tilebox console`: the pages a real console process serves over HTTP, its read-only routes, and
its one-line errors. (What a person sees in a browser is in tests/browser/.)"""

from __future__ import annotations

import html
import re
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from click.testing import CliRunner

from tests.conftest import BACKENDS, Cli
from tests.console_process import ConsoleProcess
from tests.servers import ServerProcess
from tests.tasks_fixture import Flaky, Leaf, Root, Step
from tests.waiting import wait_for
from tilebox_cli.console.app import create_app
from tilebox_cli.main import cli as tilebox
from tilebox_core import Client, ReleaseTask, position_time
from tilebox_core.build.artifact import pack
from tilebox_core.task import input_schema

BULK = 55  # more than a page of the jobs list (50)


@dataclass
class Site:
    console: ConsoleProcess
    client: Client
    redis_url: str
    first: str  # release ids
    second: str
    first_deployed_at: str  # ISO time of the first deployment
    root_job: str
    flaky_job: str
    queued_job: str


def _artifact(tmp: Path) -> bytes:
    (tmp / "scenes").mkdir()
    (tmp / "scenes" / "__init__.py").write_text("")
    (tmp / "scenes" / "runner.py").write_text("runner = None\n")
    return pack(tmp, ["scenes/__init__.py", "scenes/runner.py"]).data


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    work = tmp_path_factory.mktemp("console")
    server = ServerProcess("valkey", BACKENDS["valkey"], work / "server").start()
    team = "t-" + uuid.uuid4().hex[:12]
    client = Client(server.url, team=team, actor="user:alice")
    try:
        client.clusters().create("Prod EU", slug="prod")
        client.clusters().create("Dev", slug="dev")
        client.workflows().create("Scenes", slug="scenes")
        tasks = [ReleaseTask("test.Root", "v1.0", input_schema(Root)),
                 ReleaseTask("test.Leaf", "v1.0", input_schema(Leaf))]  # fmt: skip
        first = (
            client.workflows()
            .publish_release("scenes", _artifact(work), tasks, runner="scenes.runner:runner")
            .release.id
        )
        client.workflows().deploy_release(first, clusters=["dev", "prod"])
        (deployed,) = list(client.events().list(types=["DeploymentSet"]))[:1]
        deployed_ms = int(deployed.position.split("-")[0])
        wait_for(lambda: client.redis.time()[0] * 1000 > deployed_ms + 1)  # the next is later
        second = (
            client.workflows()
            .publish_release(
                "scenes", b"not a tar archive", tasks[:1], runner="scenes.runner:runner"
            )
            .release.id
        )
        client.workflows().deploy_release(second, clusters=["dev"])
        jobs = client.jobs()
        jobs.submit_many(((f"bulk-{i}", Leaf(str(i))) for i in range(BULK)), cluster="dev")
        root = jobs.submit("scene-42", Root(1), cluster="dev")
        flaky = jobs.submit("flaky", Flaky("x"), cluster="dev")
        client.runner("dev", tasks=[Root, Step, Leaf, Flaky], cache_root=work / "cache").run_all()
        queued = jobs.submit("waits", Leaf("p"), cluster="prod")
        console = ConsoleProcess(server.url, team, work)
        try:
            yield Site(console, client, server.url, first, second,
                       position_time(deployed.position).isoformat(), root.id, flaky.id, queued.id)  # fmt: skip
        finally:
            console.stop()
    finally:
        client.close()
        server.stop()


def text(body: str) -> str:
    """What a reader sees of ``body``: tags dropped (blocks apart), entities decoded, spaces
    collapsed."""
    body = re.sub(r"<style.*?</style>", " ", body, flags=re.S)
    body = re.sub(r"</?(?:td|th|tr|div|p|li|dt|dd|h1|h2|section|table|option)\b[^>]*>", " ", body)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", body)).split())


def events_shown(body: str) -> str:
    """The text of an event log page below its filters."""
    return text(body.split("</form>", 1)[1])


def test_every_route_only_reads(site: Site) -> None:
    app = create_app(lambda: site.client, team="x")
    paths = []
    for route in app.routes:
        methods = getattr(route, "methods", None)
        if methods is None:  # the static files mount: StaticFiles answers GET and HEAD only
            assert route.path == "/static"
            paths.append("/static/console.css")
            continue
        assert methods <= {"GET", "HEAD"}, f"{route.path} accepts {methods}"
        paths.append(route.path.replace("{", "").replace("}", ""))
    for path in paths:
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            assert site.console.get(path, method).status == 405, (method, path)
    assert site.console.get("/static/console.css", "HEAD").status == 200


def test_it_listens_on_the_loopback_address_by_default(site: Site) -> None:
    assert site.console.url.startswith("http://127.0.0.1:")
    help_text = CliRunner().invoke(tilebox, ["console", "--help"]).output
    assert "[default: 127.0.0.1]" in help_text


def test_clusters_show_runners_and_deployments(site: Site) -> None:
    page = site.console.get("/clusters")
    assert page.status == 200 and page.headers["server-timing"].startswith("app;dur=")
    seen = text(page.body)
    assert "Prod EU" in seen and "Dev" in seen
    assert f"/releases/{site.second}" in page.body  # what dev runs now
    cluster = site.console.get("/clusters/prod")
    seen = text(cluster.body)
    assert "No runner serves this cluster" in seen
    assert "Deployed …" + site.first[-8:] in seen
    assert "Nothing is deployed" not in seen


def test_the_as_of_control_shows_a_past_mapping(site: Site) -> None:
    now = site.console.get("/clusters/dev")
    assert re.findall(r"Deployed …(\w+)", text(now.body)) == [site.second[-8:], site.first[-8:]]
    past = site.console.get(f"/clusters/dev?as_of={quote(site.first_deployed_at)}")
    mapping = past.body.split('id="as-of-mapping"', 1)[1].split("</table>", 1)[0]
    assert f"/releases/{site.first}" in mapping and site.second not in mapping
    assert "as of " in text(past.body)
    before = site.console.get("/clusters/dev?as_of=2000-01-01T00:00:00Z")
    assert "Nothing was deployed then." in text(before.body)
    bad = site.console.get("/clusters/dev?as_of=yesterday")
    assert bad.status == 400
    assert "as_of: 'yesterday' is not a time" in text(bad.body)


def test_workflow_and_release_pages(site: Site) -> None:
    listing = text(site.console.get("/workflows").body)
    assert "Scenes" in listing and "2" in listing
    workflow = site.console.get("/workflows/scenes").body
    assert workflow.index(site.second) < workflow.index(site.first)  # newest first
    release = site.console.get(f"/releases/{site.first}")
    seen = text(release.body)
    assert "scenes/runner.py" in seen and "scenes/__init__.py" in seen
    assert "test.Root@v1.0" in seen and "n: integer" in seen
    assert "Deployed on prod Tasks" in seen  # dev runs the second now
    unreadable = text(site.console.get(f"/releases/{site.second}").body)
    assert "Files unknown: artifact is not valid zstd data" in unreadable
    missing = site.console.get("/releases/nope")
    assert missing.status == 404 and "unknown release" in text(missing.body).lower()


def test_jobs_list_filters_and_pages(site: Site) -> None:
    first = site.console.get("/jobs")
    rows = re.findall(r'href="/jobs/([0-9a-f-]{36})"', first.body)
    assert len(rows) == 50 and rows[0] == site.queued_job  # newest first
    assert "Older →</a>" in first.body
    second = site.console.get("/jobs?page=2")
    rest = re.findall(r'href="/jobs/([0-9a-f-]{36})"', second.body)
    assert len(rest) == BULK + 3 - 50 and not set(rows) & set(rest)
    assert "← Newer</a>" in second.body
    failed = re.findall(
        r'href="/jobs/([0-9a-f-]{36})"', site.console.get("/jobs?state=failed").body
    )
    assert failed == [site.flaky_job]
    on_prod = site.console.get("/jobs?cluster=prod").body
    assert re.findall(r'href="/jobs/([0-9a-f-]{36})"', on_prod) == [site.queued_job]
    named = text(site.console.get("/jobs?name=scene").body)
    assert "scene-42" in named and "bulk-1" not in named
    future = text(site.console.get("/jobs?since=2999-01-01T00:00:00Z").body)
    assert "No jobs match these filters." in future
    bad = site.console.get("/jobs?state=done&since=soon")
    assert bad.status == 400
    assert "state: unknown value 'done'" in text(bad.body)
    assert "since: 'soon' is not a time" in text(bad.body)


def test_job_page_diagram_tasks_and_live_part(site: Site) -> None:
    job = site.client.jobs().find(site.root_job)
    page = site.console.get(f"/jobs/{site.root_job}")
    seen = text(page.body)
    assert "completed" in seen and "6 of 6 done" in seen and "steps 3 / 3" in seen
    diagram = page.body.split('<div class="diagram-scroll">', 1)[1].split("</svg>", 1)[0]
    assert {t.id for t in job.tasks} == set(re.findall(r'data-task-id="([^"]+)"', diagram))
    assert diagram.count('class="dependency"') == 3
    for t in job.tasks:
        assert f"/jobs/{job.id}/tasks/{t.id}" in diagram
    live = site.console.get(f"/jobs/{site.root_job}/live")
    assert live.body.lstrip().startswith('<section id="live"') and 'data-final="true"' in live.body
    svg = site.console.get(f"/jobs/{site.root_job}/diagram.svg")
    assert svg.headers["content-type"] == "image/svg+xml" and "test.Step@v1.0" in svg.body
    queued = site.console.get(f"/jobs/{site.queued_job}").body
    assert 'data-final="false"' in queued
    assert "no live runner serves cluster 'prod'" in html.unescape(queued)
    only = site.console.get(f"/jobs/{site.root_job}?task_state=computed&tasks_page=1")
    assert text(only.body).count("computed") > 6
    missing = site.console.get("/jobs/0000")
    assert missing.status == 404 and "unknown job '0000'" in text(missing.body)


def test_task_page_shows_runner_attempts_and_the_error(site: Site) -> None:
    job = site.client.jobs().find(site.flaky_job)
    (task,) = job.tasks
    page = site.console.get(f"/jobs/{job.id}/tasks/{task.id}")
    seen = text(page.body)
    assert "test.Flaky@v1.0" in seen and "failed" in seen
    assert task.runner_id is not None and task.runner_id in seen
    assert "RuntimeError: bug while processing x" in seen
    assert "TaskClaimed" in seen and "TaskFailed" in seen
    # the error it keeps: type, message, attempts and traceback, on its page and the job's
    error = page.body.split('id="error"', 1)[1].split("</section>", 1)[0]
    assert "RuntimeError: bug while processing x" in text(error) and "after 1 attempt" in text(
        error
    )
    assert "Traceback (most recent call last)" in html.unescape(error)
    assert "tasks_fixture.py" in html.unescape(error)
    job_page = site.console.get(f"/jobs/{job.id}").body
    assert "RuntimeError: bug while processing x" in text(job_page.split('id="tasks"', 1)[1])
    # its log: the line its runner logged for it when it failed (context.logger)
    logs = text(page.body.split('id="logs"', 1)[1].split("</section>", 1)[0])
    assert (
        "Logs 1" in logs
        and "warning task failed error=RuntimeError: bug while processing x" in logs
    )
    root = site.client.jobs().find(site.root_job, with_dependencies=True)
    waiting = next(t for t in root.tasks if len(t.depends_on) == 2)
    seen = text(site.console.get(f"/jobs/{root.id}/tasks/{waiting.id}").body)
    assert seen.count("test.Step@v1.0 computed") >= 2  # the two it waits for
    missing = site.console.get(f"/jobs/{job.id}/tasks/nope")
    assert missing.status == 404 and "has no task 'nope'" in text(missing.body)


def test_event_log_filters_and_pages(site: Site) -> None:
    page = site.console.get("/events")
    assert page.status == 200 and "Older →</a>" in page.body
    deployments = events_shown(
        site.console.get("/events?type=DeploymentSet&type=DeploymentRemoved").body
    )
    assert "3 events match." in deployments and "JobSubmitted" not in deployments
    of_job = events_shown(site.console.get(f"/events?job={site.flaky_job}").body)
    assert "JobSubmitted" in of_job and "TaskFailed" in of_job and "bulk-1" not in of_job
    assert of_job.index("TaskFailed") < of_job.index("JobSubmitted")  # newest first
    on_prod = text(site.console.get("/events?type=DeploymentSet&cluster=prod").body)
    assert "1 event match." in on_prod
    bad = site.console.get("/events?type=Nope&until=later")
    assert bad.status == 400
    assert "unknown event type 'Nope'" in text(bad.body) and "until:" in text(bad.body)


def test_console_errors_are_one_line(site: Site) -> None:
    cli = Cli(site.redis_url, "t-errors")
    bad_port = cli("console", "--port", "70000", ok=False)
    assert bad_port.exit_code == 2 and "70000 is not in the range 0<=x<=65535" in bad_port.output
    bad_host = cli("console", "--host", "no-such-host.invalid", ok=False)
    assert bad_host.exit_code == 1
    assert bad_host.output.startswith("Error: --host 'no-such-host.invalid' is not an address")
    assert len(bad_host.output.strip().splitlines()) == 1
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        in_use = cli("console", "--port", str(port), ok=False)
    assert in_use.exit_code == 1
    assert in_use.output.strip() == (
        f"Error: cannot listen on 127.0.0.1:{port}: Address already in use; pick another --port"
    )


def test_an_unreachable_store_is_one_line(tmp_path: Path) -> None:
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    free = port.getsockname()[1]
    port.close()
    result = Cli(f"redis://127.0.0.1:{free}/0", "t")("console", "--port", "0", ok=False)
    assert result.exit_code == 1 and "Traceback" not in result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: ")
