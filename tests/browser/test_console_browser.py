"""The console in a real browser, as an operator uses it: a real release runner serves a cluster,
and the tests click from the clusters to a job and its tasks, go back in time on a cluster, and
watch a job page follow a job to its end. One server, runner and console for the module."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BACKENDS
from tests.console_process import ConsoleProcess
from tests.servers import ServerProcess
from tests.test_release_runner import Story as ReleaseStory
from tests.waiting import wait_for
from tilebox_core import Client

# The workflow of the release runner tests (Fetch submits Process, and Publish waiting for it), its
# Process held for jobs of scene "gated" until a file named "gate" appears next to the trace file.
PROCESS = """
gate = os.path.join(os.path.dirname(os.environ["TILEBOX_TEST_TRACE"]), "gate")
deadline = time.monotonic() + 60
while self.scene == "gated" and not os.path.exists(gate):
    if time.monotonic() > deadline:
        raise RuntimeError("the gate was never opened")
    time.sleep(0.02)
"""


@dataclass
class Story:
    url: str  # the console's
    client: Client
    work: Path
    first: str  # release ids, in deployment order; the runner runs the second
    second: str
    runner_id: str
    job_id: str  # completed before the tests


@pytest.fixture(scope="module")
def story(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    work = tmp_path_factory.mktemp("browser")
    server = ServerProcess("valkey", BACKENDS["valkey"], work / "server").start()
    team = "t-" + uuid.uuid4().hex[:12]
    releases = ReleaseStory(server, team, work)  # publishes and runs releases, stops its runner
    client = releases.client
    console: ConsoleProcess | None = None
    try:
        client.clusters().create("Dev EU", slug="dev")
        first = releases.publish("one", process_body=PROCESS)
        releases.deploy(first, "dev")
        deployed_ms = int(
            next(iter(client.events().list(types=["DeploymentSet"]))).position.split("-")[0]
        )
        wait_for(lambda: client.redis.time()[0] * 1000 > deployed_ms + 1)  # the next is later
        second = releases.publish("two", process_body=PROCESS)
        releases.deploy(second, "dev")
        releases.start_runner("dev")
        wait_for(
            lambda: any(s.status == "running" for r in releases.live("dev") for s in r.releases)
        )
        job = client.jobs().submit_by_name(
            "scene-1", "scenes.Fetch", "v1.0", '{"scene": "1"}', "dev"
        )
        client.jobs().wait(job.id, timeout=60)
        console = ConsoleProcess(server.url, team, work)
        (live,) = releases.live("dev")
        yield Story(console.url, client, work, first, second, live.id, job.id)
    finally:
        if console is not None:
            console.stop()
        releases.close()
        server.stop()


def test_from_the_clusters_to_a_job_and_its_task(page: Any, story: Story) -> None:
    from playwright.sync_api import expect

    page.goto(story.url + "/clusters")
    row = page.locator("tbody tr", has=page.get_by_role("link", name="Dev EU"))
    expect(row).to_contain_text("1 live")
    expect(row).to_contain_text("scenes → …" + story.second[-8:])
    page.get_by_role("link", name="Dev EU").click()

    expect(page.locator("h1")).to_contain_text("Dev EU")
    runners = page.locator("#runners")
    expect(runners).to_contain_text(story.runner_id)
    expect(runners.locator(".release-status")).to_contain_text("running")
    expect(page.locator("#deployed")).to_contain_text("scenes.Publish@v1.0")
    page.get_by_role("link", name="its jobs →").click()

    expect(page.locator("#jobs")).to_contain_text("scene-1")
    page.get_by_role("link", name="scene-1").click()
    expect(page.locator("#live .summary .badge")).to_have_text("completed")
    expect(page.locator("#done-count")).to_have_text("3 of 3 done")
    diagram = page.locator(".diagram-scroll svg")
    expect(diagram).to_be_visible()
    expect(diagram.locator("g.task")).to_have_count(3)
    expect(diagram.locator("g.task[data-state=computed]")).to_have_count(3)
    expect(diagram.locator("path.dependency")).to_have_count(1)  # Publish waits for Process

    diagram.locator("g.task", has_text="scenes.Publish@v1.0").click()
    expect(page.locator("h1")).to_contain_text("scenes.Publish@v1.0")
    expect(page.locator("#task-runner")).to_contain_text(story.runner_id)  # /release/process
    expect(page.locator("#task-release")).to_contain_text(story.second[-8:])
    expect(page.locator("main")).to_contain_text("Waits for scenes.Process@v1.0")
    expect(page.locator("#history")).to_contain_text("TaskCompleted")
    page.get_by_role("link", name="scenes.Process@v1.0").click()
    expect(page.locator("h1")).to_contain_text("scenes.Process@v1.0")


def test_a_cluster_as_of_an_earlier_deployment(page: Any, story: Story) -> None:
    from playwright.sync_api import expect

    page.goto(story.url + "/clusters/dev")
    entries = page.locator("ol.timeline li.deployed")
    expect(entries).to_have_count(2)
    expect(entries.first).to_contain_text(story.second[-8:])  # newest first
    entries.nth(1).get_by_role("link", name="as of this moment").click()
    mapping = page.locator("#as-of-mapping")
    expect(mapping).to_contain_text(story.first[-8:])
    expect(mapping).not_to_contain_text(story.second[-8:])
    expect(page.locator("ol.timeline li.after")).to_have_count(1)  # the later deployment, faded

    page.get_by_role("link", name="Events").click()
    page.locator("select[name=type]").select_option(["DeploymentSet"])
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#events tbody tr")).to_have_count(2)
    expect(page.locator("#events")).to_contain_text(story.first[-8:])


def test_a_job_page_follows_the_job_to_its_end(page: Any, story: Story) -> None:
    from playwright.sync_api import expect

    job = story.client.jobs().submit_by_name(
        "gated", "scenes.Fetch", "v1.0", json.dumps({"scene": "gated"}), "dev"
    )
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if r.url.endswith("/live") else None)
    page.goto(f"{story.url}/jobs/{job.id}")
    badge = page.locator("#live .summary .badge")
    expect(badge).to_have_text("running")
    # Fetch computed, Process held at the gate, Publish waiting for Process
    expect(page.locator(".diagram-scroll g.task[data-state=running]")).to_have_count(1)
    expect(page.locator(".diagram-scroll g.task[data-state=waiting]")).to_have_count(1)
    page.evaluate("window.sameDocument = true")

    (story.work / "gate").touch()  # the runner completes the job meanwhile
    expect(badge).to_have_text("completed", timeout=30_000)
    assert page.evaluate("window.sameDocument") is True  # updated in place, not reloaded
    expect(page.locator(".diagram-scroll g.task[data-state=computed]")).to_have_count(3)
    expect(page.locator("#done-count")).to_have_text("3 of 3 done")
    expect(page.locator("#live")).to_have_attribute("data-final", "true")
    expect(page.locator(".live-indicator")).to_have_count(0)
    seen = len(polls)
    assert seen >= 1
    page.wait_for_timeout(1_500)  # longer than a polling interval (1 s at least): none comes
    assert len(polls) == seen
