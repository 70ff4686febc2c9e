"""The job diagram: dependencies read from the task plane, the SVG renderer, and where it is shown."""

from __future__ import annotations

import datetime as dt
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.tasks_fixture import Leaf, Root, Step, Wide
from tilebox_core import Client, Job, TaskInfo, job_diagram
from tilebox_core.domain.diagram import MAX_BOXES, MAX_CHILDREN, STATE_COLOURS

SVG = "{http://www.w3.org/2000/svg}"


def texts(svg: str) -> list[str]:
    return [t.text or "" for t in ET.fromstring(svg).iter(f"{SVG}text")]


def groups(svg: str, kind: str) -> list[ET.Element]:
    return [g for g in ET.fromstring(svg).iter(f"{SVG}g") if g.get("class") == kind]


def arrows(svg: str) -> int:
    return sum(1 for p in ET.fromstring(svg).iter(f"{SVG}path") if p.get("class") == "dependency")


def view(tasks: list[TaskInfo], state: str = "running") -> Job:
    return Job(
        id="j1", name="scene-42", cluster="default", state=state,
        submitted_at=dt.datetime(2026, 11, 21, tzinfo=dt.UTC), submitted_by="user:test",
        total_tasks=len(tasks), tasks_by_state={}, compute_seconds=0.0, progress=[], tasks=tasks,
    )  # fmt: skip


def task(task_id: str, name: str, state: str, parent: str | None = None,
         depends_on: tuple[str, ...] = ()) -> TaskInfo:  # fmt: skip
    return TaskInfo(task_id, name, "v1.0", state, parent, "default", None, None, 1, 0.0,
                    list(depends_on))  # fmt: skip


def test_find_reads_dependencies_only_when_asked(client: Client, tmp_path: Path) -> None:
    job = client.jobs().submit("deps", Root(1))
    client.runner(tasks=[Root, Step, Leaf], cache_root=tmp_path).run_all()
    plain = client.jobs().find(job.id)
    assert all(t.depends_on == [] for t in plain.tasks)
    found = client.jobs().find(job.id, with_dependencies=True)
    by_label = {t.id: t for t in found.tasks}
    steps = [t for t in found.tasks if t.name == "test.Step"]
    a, b, c = steps
    assert (a.depends_on, b.depends_on, sorted(c.depends_on)) == ([], [a.id], sorted([a.id, b.id]))
    assert all(by_label[d].parent_id == t.parent_id for t in found.tasks for d in t.depends_on)
    assert [t.id for t in found.tasks] == [t.id for t in plain.tasks]


def test_visualize_draws_every_task_its_state_and_each_dependency(
    client: Client, tmp_path: Path
) -> None:
    job = client.jobs().submit("deps", Root(1))
    svg = client.jobs().visualize(job)
    ET.fromstring(svg)  # well-formed before it ran, too
    assert groups(svg, "task")[0].get("data-state") == "queued"
    client.runner(tasks=[Root, Step, Leaf], cache_root=tmp_path).run_all()
    svg = client.jobs().visualize(job.id)
    found = client.jobs().find(job.id)
    shown = texts(svg)
    for t in found.tasks:
        assert f"{t.name}@{t.version}" in shown
    assert {g.get("data-task-id") for g in groups(svg, "task")} == {t.id for t in found.tasks}
    assert STATE_COLOURS["computed"][0] in svg
    assert arrows(svg) == 3  # b waits for a; c for a and b
    assert "completed" in shown[0] and "6 tasks" in shown[0]  # the title


def test_states_have_their_colours_and_a_legend() -> None:
    states = ["waiting", "queued", "running", "computed", "failed", "cancelled"]
    tasks = [task("root", "acme.Root", "running")]
    tasks += [task(f"t{i}", f"acme.T{i}", s, "root") for i, s in enumerate(states)]
    svg = job_diagram(view(tasks))
    for t in tasks:
        (box,) = [g for g in groups(svg, "task") if g.get("data-task-id") == t.id]
        rects = [r.get("stroke") for r in box.iter(f"{SVG}rect")]
        assert STATE_COLOURS[t.state][0] in rects
    legend = [t.text for g in groups(svg, "legend") for t in g.iter(f"{SVG}text")]
    assert legend[: len(states)] == states
    assert "subtask" in legend


def test_a_wide_fan_out_of_identical_leaves_is_one_box_with_counts() -> None:
    states = ["computed"] * 9_000 + ["running"] * 700 + ["failed"] * 299
    tasks = [task("root", "acme.Fan", "running")]
    tasks += [task(f"l{i}", "acme.Leaf", s, "root") for i, s in enumerate(states)]
    tasks.append(task("last", "acme.Reduce", "waiting", "root", ("l0",)))  # keeps its own box
    svg = job_diagram(view(tasks))
    shown = texts(svg)
    assert "9,998 × acme.Leaf@v1.0" in shown
    assert "700 running · 8,999 computed · 299 failed" in shown  # in lifecycle order
    assert len(groups(svg, "task")) == 3  # root, the leaf l0 (it has a dependant) and Reduce
    assert arrows(svg) == 1


def test_many_distinct_subtasks_are_capped_and_the_rest_summed() -> None:
    tasks = [task("root", "acme.Fan", "running")]
    tasks += [task(f"c{i}", f"acme.Kind{i}", "computed", "root") for i in range(300)]
    tasks += [task(f"g{i}", "acme.Leaf", "queued", f"c{i}") for i in range(300)]
    svg = job_diagram(view(tasks))
    assert len(groups(svg, "task")) < MAX_BOXES
    assert f"+ {600 - 2 * (MAX_CHILDREN - 1):,} more tasks" in texts(svg)


def test_a_deep_chain_is_cut_and_text_is_escaped() -> None:
    tasks = [task("t0", "acme.<Deep>&", "computed")]
    tasks += [task(f"t{i}", "acme.<Deep>&", "computed", f"t{i - 1}") for i in range(1, 2_000)]
    svg = job_diagram(view(tasks))
    assert "acme.<Deep>&@v1.0" in texts(svg)  # parsed back from &lt;Deep&gt;&amp;
    assert any(t.endswith("tasks below") for t in texts(svg))


def test_display_shows_the_svg_in_a_notebook(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = client.jobs().submit("deps", Root(1))
    monkeypatch.setitem(sys.modules, "IPython", None)  # not installed
    with pytest.raises(ImportError, match="needs IPython"):
        client.jobs().display(job)
    shown: list[object] = []
    display = types.ModuleType("IPython.display")

    class SVGObject:
        def __init__(self, data: str) -> None:
            self.data = data

    display.SVG = SVGObject  # type: ignore[attr-defined]
    display.display = shown.append  # type: ignore[attr-defined]
    ipython = types.ModuleType("IPython")
    ipython.display = display  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display)
    client.jobs().display(job.id)
    (shown_svg,) = shown
    assert "test.Root@v1.0" in texts(shown_svg.data)  # type: ignore[attr-defined]


def test_job_get_writes_the_diagram(cli: Cli, client: Client, tmp_path: Path) -> None:
    job = client.jobs().submit("wide", Wide(12))
    client.runner(tasks=[Wide, Leaf], cache_root=tmp_path).run_all()
    target = tmp_path / "job.svg"
    out = cli("job", "get", job.id, "--diagram", str(target)).output
    assert f"diagram   {target}" in out
    assert "12 × test.Leaf@v1.0" in texts(target.read_text())
    missing = cli("job", "get", job.id, "--diagram", str(tmp_path / "no" / "x.svg"), ok=False)
    assert missing.exit_code != 0
    assert "Traceback" not in missing.output
    assert missing.output.strip().splitlines()[-1].startswith("Error: ")
    assert not (tmp_path / "no").exists()
