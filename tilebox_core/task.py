"""What task code sees: the ``Task`` base class and the ``ExecutionContext`` interface.

A task's fields are its input (a msgspec Struct, so it has a JSON schema); ``execute`` does the
work. The context is an interface here; runners pass their own implementation
(``tilebox_core.execution.context``), so task code depends on nothing that talks to Redis.
"""

from __future__ import annotations

import abc
import base64
import binascii
import functools
import inspect
import sys
import warnings
from collections.abc import Sequence
from typing import Any, TypeVar, cast

import msgspec

from tilebox_core.cache import JobCache
from tilebox_core.domain.errors import InvalidInput
from tilebox_core.domain.identifiers import TaskIdentifier, make_identifier
from tilebox_core.tracing import NOOP_TRACER

T = TypeVar("T")


class TaskDefinitionError(InvalidInput, TypeError):
    """A task class that cannot be a task, raised where it is defined (as Tilebox raises a
    ``TypeError`` there): an ``execute`` of the wrong shape or an invalid ``identifier()``."""


class Task(msgspec.Struct):
    """Base class of every task. Fields are the task's input; ``execute`` does the work.

    Override ``identifier()`` (a staticmethod returning ``(name, "vMAJOR.MINOR")``) to version a task;
    without it the identifier is ``(ClassName, "v0.0")``. A class is checked when it is defined:
    ``execute(self, context)`` returning nothing, and a valid identifier. A class without
    ``execute`` is a stub: it can be submitted (by a client that does not have the task's code)
    but not registered with a runner.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _check_execute(cls)
        task_identifier(cls)  # an invalid identifier fails here, at the class, not at a submit

    @classmethod
    def identifier(cls) -> tuple[str, str]:
        return cls.__name__, "v0.0"

    def execute(self, context: ExecutionContext) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


_EXECUTE_PARAMETERS = ("self", "context")


def _check_execute(task_class: type) -> None:
    """Tilebox's rule for ``execute``: two parameters (self, context) and no return value (no
    annotation, or ``None``, also as the string ``"None"`` of postponed annotations). A method
    marked ``@typing.override`` is taken as it is, as Tilebox does."""
    execute = task_class.__dict__.get("execute")
    if execute is None or getattr(execute, "__override__", False):
        return
    where = _where(task_class, execute)
    try:
        signature = inspect.signature(execute)
    except (TypeError, ValueError):
        raise TaskDefinitionError(
            f"task class {task_class.__qualname__}{where}: execute is not a method; define "
            "def execute(self, context: ExecutionContext) -> None"
        ) from None
    if len(signature.parameters) != len(_EXECUTE_PARAMETERS):
        raise TaskDefinitionError(
            f"task class {task_class.__qualname__}{where}: expected execute(self, context), got "
            f"execute{signature}; define def execute(self, context: ExecutionContext) -> None"
        )
    if signature.return_annotation not in (None, "None", inspect.Signature.empty):
        raise TaskDefinitionError(
            f"task class {task_class.__qualname__}{where}: execute{signature} must not return a "
            "value; annotate it -> None and share results through context.job_cache"
        )


@functools.cache  # asked once per task submitted and run; a class's identifier never changes
def task_identifier(task_class: type[Task]) -> TaskIdentifier:
    """The validated identifier of a task class (a stub's too: it can be submitted)."""
    if not (isinstance(task_class, type) and issubclass(task_class, Task)):
        raise InvalidInput(f"{task_class!r} is not a subclass of tilebox_core.Task")
    name = task_class.__qualname__
    try:
        identifier = task_class.identifier()
    except TypeError as exc:
        raise TaskDefinitionError(
            f"task class {name}{_where(task_class)}: cannot call {name}.identifier() ({exc}); "
            "make it a staticmethod or classmethod without parameters"
        ) from None
    if not (
        isinstance(identifier, tuple)
        and len(identifier) == 2
        and all(isinstance(part, str) for part in identifier)
    ):
        raise TaskDefinitionError(
            f"task class {name}{_where(task_class)}: {name}.identifier() returned "
            f"{identifier!r}; return a tuple of two strings, (name, 'vMAJOR.MINOR')"
        )
    try:
        return make_identifier(*identifier)
    except InvalidInput as exc:
        raise TaskDefinitionError(f"task class {name}{_where(task_class)}: {exc}") from None


def _where(task_class: type, method: object = None) -> str:
    """ " in FILE[:LINE]" of a class (of its method, when given), as far as it is known."""
    code = getattr(method, "__code__", None)
    if code is not None:
        return f" in {code.co_filename}:{code.co_firstlineno}"
    module = sys.modules.get(task_class.__module__)
    path = getattr(module, "__file__", None)
    return f" in {path}" if path else f" of module {task_class.__module__}"


def is_executable(task_class: type[Task]) -> bool:
    """Whether ``task_class`` (or a base of it) defines ``execute``: a stub does not."""
    return task_class.execute is not Task.execute


def check_executable(task_class: object) -> type[Task]:
    """``task_class``, if a runner can execute it; else InvalidInput saying why."""
    identifier = task_identifier(task_class)  # checks that it is a Task subclass
    task_class = cast(type[Task], task_class)
    if not is_executable(task_class):
        named = "" if identifier.name == task_class.__name__ else f" ({identifier.name})"
        raise InvalidInput(
            f"task class {task_class.__qualname__}{named}{_where(task_class)} is not executable: "
            "it has no execute method; a runner needs the class that defines "
            "execute(self, context)"
        )
    return task_class


# --- task input: a JSON object of the task's fields ---------------------------------------------
#
# Fields of the types msgspec knows (str, int, datetime, lists, dicts, Structs, dataclasses, ...)
# are its JSON. A field that is a protobuf message is, as Tilebox serialises it in a task with
# several fields, the base64 text of its binary encoding (``SerializeToString``), read back with
# the field type's ``FromString``; also inside lists, dicts and optional fields. Messages are
# recognised by those methods, as Tilebox does, so protobuf itself is needed only by the task
# code that uses it (the ``protobuf`` extra).


def _encode_hook(value: Any) -> Any:
    serialize = getattr(value, "SerializeToString", None)
    if serialize is not None:
        return base64.b64encode(serialize()).decode("ascii")
    raise NotImplementedError(
        f"cannot serialise an {type(value).__name__} value in a task input: use JSON types, "
        "Structs, dataclasses or protobuf messages"
    )


def _decode_hook(kind: type, value: Any) -> Any:
    from_string = getattr(kind, "FromString", None)
    # a TypeError or ValueError becomes msgspec's ValidationError, which names the field
    if from_string is None:
        raise TypeError(f"cannot read a {kind.__name__} from a task input")
    if not isinstance(value, str):
        raise TypeError(f"expected the base64 text of a {kind.__name__} message, got {value!r}")
    try:
        raw = base64.b64decode(value, validate=True)
    except binascii.Error:
        raise ValueError(f"not the base64 text of a {kind.__name__} message") from None
    try:
        return from_string(raw)
    except Exception as exc:  # protobuf's DecodeError derives from Exception only
        raise ValueError(f"not a {kind.__name__} message: {exc}") from None


def _schema_hook(kind: type) -> dict[str, Any]:
    descriptor = getattr(kind, "DESCRIPTOR", None)
    if hasattr(kind, "FromString") and descriptor is not None:
        return {
            "type": "string",
            "contentEncoding": "base64",
            "description": f"protobuf message {descriptor.full_name}, binary, base64-encoded",
        }
    raise NotImplementedError


_input_encoder = msgspec.json.Encoder(enc_hook=_encode_hook)


def encode_input(task: Task) -> str:
    """A task's input: the JSON object of its fields."""
    return _input_encoder.encode(task).decode()


def decode_input(data: bytes | str, task_class: type[T]) -> T:
    """The task of ``task_class`` whose input is ``data``; msgspec.ValidationError if it is not
    one (a missing field, a wrong type, a message that does not decode)."""
    return msgspec.json.decode(data, type=task_class, dec_hook=_decode_hook)


def input_schema(task_class: type[Task]) -> dict[str, Any]:
    """The JSON schema of a task's input fields (used for validation and compatibility checks)."""
    return msgspec.json.schema(task_class, schema_hook=_schema_hook)


class CurrentTask:
    """The task being executed: its id, job, identifier and attempt (1 for the first run), and
    ``display``, its name in job views and diagrams: its class's name unless the task sets
    another (``context.current_task.display = "..."``, as in Tilebox; at most 1024 characters
    are kept, line breaks allowed)."""

    def __init__(
        self, task_id: str, job_id: str, name: str, version: str, attempt: int, display: str = ""
    ) -> None:
        self.id = task_id
        self.job_id = job_id
        self.name = name
        self.version = version
        self.attempt = attempt
        self.display = display


class FutureTask:
    """Handle of a subtask submitted in this ``execute`` call, for use in ``depends_on``."""

    def __init__(self, owner: object, index: int, task_id: str, task: Task) -> None:
        self._owner = owner  # the context that made it: dependencies stay within one call
        self.index = index
        self.id = task_id
        self.task = task

    def __repr__(self) -> str:
        return f"FutureTask({type(self.task).__name__}, id={self.id})"


class ProgressIndicator:
    """A job's progress indicator as one task reports to it, as in Tilebox: ``add(n)`` adds n to
    the work to be done, ``done(n)`` marks n of it done. A job's indicator is the sum of what its
    tasks reported (a task's report counts once it completed)."""

    def __init__(self, label: str | None) -> None:
        self.label = label
        self._total = 0
        self._done = 0

    def add(self, count: int) -> None:
        """Add ``count`` units to the total work to be done."""
        self._total += _count(count, "add")

    def done(self, count: int) -> None:
        """Mark ``count`` units of work done."""
        self._done += _count(count, "done")


def _count(count: object, method: str) -> int:
    # Counts are summed by the server as integers: a float or a negative number would corrupt
    # (or, not being an integer, fail to record) the job's totals, so it fails the task here.
    if isinstance(count, bool) or not isinstance(count, int):
        raise TypeError(f"progress {method}(count) takes an int, got {count!r}")
    if count < 0:
        raise ValueError(f"progress {method}(count) takes a count >= 0, got {count}")
    return count


class RunnerContext:
    """What a runner shares with every task it executes, as ``context.runner_context``.

    Subclass it for resources a task should not make anew each time (clients, loaded models,
    configuration) and pass the class to ``Runner(..., context=MyContext)`` or
    ``client.runner(..., context=MyContext)``: each runner makes one instance when it is created
    (a release runner, one per runtime process), calling the class without arguments.
    """


class ExecutionContext(abc.ABC):
    """Passed to ``Task.execute``. Subtasks are only submitted if ``execute`` returns normally."""

    current_task: CurrentTask

    @property
    @abc.abstractmethod
    def runner_context(self) -> RunnerContext:
        """The runner's context object (see ``RunnerContext``)."""

    @property
    @abc.abstractmethod
    def job_cache(self) -> JobCache:
        """Bytes shared by the tasks of this job."""

    @property
    @abc.abstractmethod
    def logger(self) -> Any:
        """A structlog logger bound to the job, task and runner."""

    @property
    def tracer(self) -> Any:
        """An OpenTelemetry tracer for the task's own spans, children of the span of its execution
        (``with context.tracer.start_as_current_span("download"): ...``); a tracer that does
        nothing when tracing is off."""
        return NOOP_TRACER

    @abc.abstractmethod
    def submit_subtask(
        self,
        task: Task,
        depends_on: Sequence[FutureTask] | FutureTask | None = None,
        cluster: str | None = None,
        max_retries: int = 0,
        optional: bool = False,
    ) -> FutureTask:
        """Submit a subtask, run once this task has completed (and ``depends_on`` have); it is
        retried ``max_retries`` times (0 unless given: not its parent's, as in Tilebox)."""

    @abc.abstractmethod
    def submit_subtasks(
        self,
        tasks: Sequence[Task],
        depends_on: Sequence[FutureTask] | FutureTask | None = None,
        cluster: str | None = None,
        max_retries: int = 0,
        optional: bool = False,
    ) -> list[FutureTask]:
        """Submit several subtasks sharing the same options."""

    def submit_batch(
        self, tasks: Sequence[Task], cluster: str | None = None, max_retries: int = 0
    ) -> list[FutureTask]:
        """Deprecated (as in Tilebox): use ``submit_subtasks``."""
        warnings.warn(
            "submit_batch is deprecated, use submit_subtasks instead",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.submit_subtasks(tasks, cluster=cluster, max_retries=max_retries)

    @abc.abstractmethod
    def progress(self, label: str | None = None) -> ProgressIndicator:
        """The job's progress indicator ``label`` (None or "": the job's default indicator)."""
