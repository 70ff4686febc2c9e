"""Task classes are checked where they are defined, as Tilebox checks them: ``execute(self,
context)`` returning nothing, a valid identifier; and a task name may be 1-256 characters of any
kind, which reaches Redis keys percent-encoded and a terminal escaped."""

from __future__ import annotations

import importlib.util
import re
import sys
import textwrap
import typing
from pathlib import Path

import pytest

from tests.conftest import Cli
from tilebox_core import Client, ExecutionContext, InvalidInput, Task
from tilebox_core.domain.diagram import job_diagram
from tilebox_core.task import TaskDefinitionError, task_identifier
from tilebox_runner import Runner


def define(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postponed: bool = False
) -> dict[str, typing.Any]:
    """Import ``source`` as the module file tasks_module.py, as workflow code is; its namespace."""
    header = "from __future__ import annotations\n" if postponed else ""
    header += "from tilebox_core import ExecutionContext, Task\n"
    path = tmp_path / "tasks_module.py"
    path.write_text(header + textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location("tasks_module", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "tasks_module", module)
    spec.loader.exec_module(module)
    return vars(module)


@pytest.mark.parametrize("postponed", [False, True])
@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("class T(Task):\n    def execute(self) -> None: ...\n",
         "expected execute(self, context), got execute(self)"),
        ("class T(Task):\n    def execute(self, context, extra) -> None: ...\n",
         "expected execute(self, context), got execute(self, context, extra)"),
        ("class T(Task):\n    def execute(self, context: ExecutionContext) -> int:\n"
         "        return 1\n", "must not return a value; annotate it -> None"),
        ("class T(Task):\n    def execute(self, context) -> str | None: ...\n",
         "must not return a value"),
        ("class T(Task):\n    execute = 42\n", "execute is not a method"),
        ("class T(Task):\n    @staticmethod\n    def identifier():\n        return '', 'v1.0'\n",
         "invalid task name '': a task name needs 1-256 characters"),
        ("class T(Task):\n    @staticmethod\n    def identifier():\n        return 'x' * 257, 'v1.0'\n",
         "257 characters, over the limit of 256"),
        ("class T(Task):\n    @staticmethod\n    def identifier():\n        return 'T', '1.0'\n",
         "invalid task version '1.0'"),
        ("class T(Task):\n    @staticmethod\n    def identifier():\n        return 'T'\n",
         "returned 'T'; return a tuple of two strings"),
        ("class T(Task):\n    def identifier(self):\n        return 'T', 'v1.0'\n",
         "cannot call T.identifier()"),
    ],
)  # fmt: skip
def test_a_bad_task_class_fails_where_it_is_defined(
    source: str, problem: str, postponed: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both a TypeError, as Tilebox raises, and the project's InvalidInput (one clear line).
    with pytest.raises(TypeError) as caught:
        define(source, tmp_path, monkeypatch, postponed)
    assert isinstance(caught.value, InvalidInput)
    message = str(caught.value)
    assert problem in message
    assert re.match(rf"task class T in {re.escape(str(tmp_path / 'tasks_module.py'))}", message)
    assert "\n" not in message


@pytest.mark.parametrize("postponed", [False, True])
def test_tilebox_shaped_task_classes_are_accepted(
    postponed: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    namespace = define(
        """
        def override(method):  # typing.override (Python 3.12) does just this
            method.__override__ = True
            return method

        class Annotated(Task):
            def execute(self, context: ExecutionContext) -> None: ...

        class Bare(Task):
            def execute(self, context):
                print("no annotations at all, as in the Tilebox docs")

        class Async(Task):
            async def execute(self, context: ExecutionContext) -> None: ...

        class Inherited(Annotated):
            n: int = 0

        class Overridden(Task):
            @override
            def execute(self, *args, **kwargs) -> int:  # taken as it is, as Tilebox does
                return 0

        class Named(Task):
            @staticmethod
            def identifier() -> tuple[str, str]:
                return "tilebox.com/example_workflow/MyTask", "v1.3"

            def execute(self, context: ExecutionContext) -> None: ...

        class Stub(Task):
            scene_id: str
        """,
        tmp_path,
        monkeypatch,
        postponed,
    )
    assert task_identifier(namespace["Named"]).name == "tilebox.com/example_workflow/MyTask"
    assert str(task_identifier(namespace["Bare"])) == "Bare@v0.0"
    runner = Runner([namespace[n] for n in ("Annotated", "Bare", "Async", "Inherited",
                                            "Overridden", "Named")])  # fmt: skip
    assert len(runner.tasks) == 6
    with pytest.raises(InvalidInput, match=r"task class Stub in .* is not executable"):
        runner.register(namespace["Stub"])


def test_task_definition_error_is_both_families() -> None:
    assert issubclass(TaskDefinitionError, TypeError)
    assert issubclass(TaskDefinitionError, InvalidInput)


ODD_NAME = "東京 {tag}\n100% done\u202e"


class OddlyNamed(Task):
    label: str

    @staticmethod
    def identifier() -> tuple[str, str]:
        return ODD_NAME, "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        context.job_cache["seen"] = self.label.encode()


def test_a_task_name_of_any_characters_runs(client: Client, cli: Cli, tmp_path: Path) -> None:
    job = client.jobs().submit("odd", OddlyNamed("hello"))
    # this team's lanes only: the server is shared by the session's tests
    (team,) = client.store.keys.acl_patterns()
    lanes = [k.decode() for k in client.redis.scan_iter(match=team) if b":lane:" in k]
    # Percent-encoded in its lane's key: no brace after the hash tag, no newline in a key.
    assert lanes and all("%7Btag%7D" in k and "\n" not in k and k.count("{") == 1 for k in lanes)
    client.runner(tasks=[OddlyNamed], cache_root=tmp_path).run_all()
    found = client.jobs().find(job.id)
    assert found.state == "completed"
    assert [t.name for t in found.tasks] == [ODD_NAME]
    assert (tmp_path / job.id / "seen").read_bytes() == b"hello"
    # On a terminal the name is one line, its control characters escaped.
    shown = cli("job", "get", job.id).output
    assert "東京 {tag}\\n100% done\\u202e@v1.0" in shown
    assert "\u202e" not in shown
    # The diagram stays well-formed XML whatever the name holds.
    import xml.etree.ElementTree as ElementTree

    svg = job_diagram(client.jobs().find(job.id, with_dependencies=True))
    ElementTree.fromstring(svg)


def test_a_name_with_characters_xml_forbids_still_draws() -> None:
    import xml.etree.ElementTree as ElementTree

    from tilebox_core.domain.diagram import escape

    ElementTree.fromstring(
        f"<t a='{escape('x' + chr(1) + chr(0xFFFE))}'>{escape('<&' + chr(0x1B))}</t>"
    )
