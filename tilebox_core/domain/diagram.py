"""A job's task tree as an SVG diagram: a pure renderer (a job view in, SVG text out, no I/O).

The tree is laid out top-down, parents centred over their subtasks; a dependency between siblings
is an arrow from the task waited for to the one waiting. A diagram stays readable at any job size:
identical leaves (same identifier, no dependencies) under one parent become one "N × name" box
with a bar of their states, a parent shows at most ``MAX_CHILDREN`` boxes (the rest summed in a
"+ N more" box), and the whole diagram at most about ``MAX_BOXES``, given out level by level so
the top of a huge tree is shown whole before its depths.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from html import escape as _html_escape

from .jobs import Job, TaskInfo

# state -> (accent colour, tint); the accent is the box's border, bar and legend colour
STATE_COLOURS: dict[str, tuple[str, str]] = {
    "waiting": ("#94a3b8", "#f8fafc"),
    "queued": ("#3b82f6", "#eff6ff"),
    "running": ("#f59e0b", "#fffbeb"),
    "computed": ("#16a34a", "#f0fdf4"),
    "failed": ("#dc2626", "#fef2f2"),
    "failed_optional": ("#ea580c", "#fff7ed"),
    "skipped": ("#8b5cf6", "#f5f3ff"),
    "cancelled": ("#6b7280", "#f3f4f6"),
}
# Characters XML 1.0 forbids even as references (C0 controls but tab, newline, return; lone
# surrogates; U+FFFE/U+FFFF): a task name may hold any character, and one of these would make the
# whole SVG unreadable, so each is drawn as U+FFFD.
_NOT_XML = {c: "\ufffd" for c in [*range(0x20), *range(0xD800, 0xE000), 0xFFFE, 0xFFFF]
            if c not in (0x09, 0x0A, 0x0D)}  # fmt: skip


def escape(text: str) -> str:
    """``text`` as SVG character data or an attribute value."""
    return _html_escape(text.translate(_NOT_XML))


UNKNOWN_COLOURS = ("#a1a1aa", "#fafafa")  # a state a newer version added
DEPENDENCY_COLOUR = "#7c3aed"
LINE_COLOUR = "#94a3b8"
TEXT_COLOUR = "#0f172a"
MUTED_COLOUR = "#475569"

GROUP_AT = 5  # identical edge-free leaves of one parent drawn as one box from this many on
MAX_CHILDREN = 40  # boxes under one parent; the rest are one "+ N more" box
MAX_BOXES = 600  # boxes in the whole diagram, about (each level may finish its parents' rows)
MAX_DEPTH = 40  # levels drawn; deeper subtrees are one box

BOX_HEIGHT = 44
ROW_GAP = 56  # room below a row for its dependency arcs and the lines to its subtasks
COLUMN_GAP = 14
MIN_WIDTH, MAX_WIDTH = 132.0, 264.0
CHAR_WIDTH = 7.0  # of 12 px sans-serif, generously: text must not overflow its box
PAD = 16
HEADER = 58  # title line and legend


@dataclass(eq=False)
class _Box:
    """One box of the diagram: a task, a group of identical leaves, or the rest of a level."""

    label: str
    detail: str
    counts: dict[str, int]
    task: TaskInfo | None = None
    tooltip: str = ""
    children: list[_Box] = field(default_factory=list)
    width: float = MIN_WIDTH
    span: float = 0.0  # width of the subtree
    x: float = 0.0
    y: float = 0.0

    @property
    def centre(self) -> float:
        return self.x + self.width / 2


def job_diagram(job: Job, link: Callable[[str], str] | None = None) -> str:
    """The SVG diagram of ``job``'s task tree (read with ``with_dependencies`` for its arrows).

    ``link(task_id)``: a URL each task box links to (the console's task pages).
    """
    tree = _Tree(job.tasks)
    roots = tree.boxes(tree.roots)
    _layout(roots)
    body: list[str] = []
    boxes = [box for root in roots for box in _walk(root)]
    for box in boxes:
        body += _subtask_lines(box)
    body += _dependency_arcs(tree, boxes)
    for box in boxes:
        body.append(_draw_box(box, link))
    forest = sum(root.span for root in roots) + COLUMN_GAP * max(len(roots) - 1, 0)
    rows = max((box.y for box in boxes), default=HEADER) + BOX_HEIGHT
    legend, legend_width = _legend(tree.states_present)
    width = max(forest + 2 * PAD, legend_width + 2 * PAD, 360)
    height = rows + PAD + (ROW_GAP / 2 if tree.has_dependencies else 0)
    title = (
        f"{job.name} · {job.state} · {job.total_tasks:,} task{'s' if job.total_tasks != 1 else ''}"
    )
    if not job.tasks:
        body.append(_text(PAD, HEADER + 24, "no tasks", MUTED_COLOUR))
    return "".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" class="tilebox-diagram" '
        f'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif" font-size="12">',
        f"<title>{escape(title)}</title>",
        '<defs><marker id="tb-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        f'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        f'fill="{DEPENDENCY_COLOUR}"/></marker></defs>',
        '<rect width="100%" height="100%" fill="#ffffff"/>',
        _text(PAD, PAD + 12, title, TEXT_COLOUR, weight="600", size=14),
        legend,
        *body,
        "</svg>",
    ])  # fmt: skip


class _Tree:
    """The tasks of a job by parent, and the boxes that stand for them."""

    def __init__(self, tasks: Sequence[TaskInfo]) -> None:
        ids = {t.id for t in tasks}
        self.children: dict[str | None, list[TaskInfo]] = {}
        for task in tasks:
            parent = task.parent_id if task.parent_id in ids else None
            self.children.setdefault(parent, []).append(task)
        self.roots = self.children.get(None, [])
        # tasks at either end of a dependency keep a box of their own, so every arrow is drawn
        self.linked = {d for t in tasks for d in t.depends_on} | {
            t.id for t in tasks if t.depends_on
        }
        self.has_dependencies = bool(self.linked)
        self.states_present = list(dict.fromkeys(t.state for t in tasks))
        self.box_of: dict[str, _Box] = {}  # task id -> the box that stands for it
        self._budget = MAX_BOXES

    def boxes(self, roots: list[TaskInfo]) -> list[_Box]:
        """Boxes for ``roots`` and their subtrees, handed out level by level (breadth first)."""
        top = self._row(roots, depth=0)
        level: deque[tuple[_Box, int]] = deque((box, 0) for box in top)
        while level:
            box, depth = level.popleft()
            if box.task is None or not self.children.get(box.task.id):
                continue
            box.children = self._row(self.children[box.task.id], depth + 1)
            level.extend((child, depth + 1) for child in box.children)
        return top

    def _row(self, siblings: list[TaskInfo], depth: int) -> list[_Box]:
        """The boxes of one parent's subtasks: identical leaves grouped, the rest capped."""
        if depth >= MAX_DEPTH or self._budget <= 0:
            return [self._rest(siblings, "below")]
        units: list[TaskInfo | list[TaskInfo]] = []  # a task, or a group of identical leaves
        groups: dict[tuple[str, str], list[TaskInfo]] = {}
        for task in siblings:
            if task.id in self.linked or task.id in self.children:
                units.append(task)
                continue
            group = groups.get((task.name, task.version))
            if group is None:
                group = groups[(task.name, task.version)] = []
                units.append(group)  # the group stands where its first member was
            group.append(task)
        # a group too small to be one box is its tasks, side by side
        units = [u for unit in units for u in (_small(unit) if isinstance(unit, list) else [unit])]
        limit = min(MAX_CHILDREN, max(self._budget, 1))
        shown, rest = (
            (units, []) if len(units) <= limit else (units[: limit - 1], units[limit - 1 :])
        )
        row = [self._task_box(u) if isinstance(u, TaskInfo) else self._group_box(u) for u in shown]
        if rest:
            row.append(
                self._rest([t for u in rest for t in (u if isinstance(u, list) else [u])], "more")
            )
        self._budget -= len(row)
        return row

    def _task_box(self, task: TaskInfo) -> _Box:
        display = getattr(task, "display", None)  # the SDK's display name, where views carry one
        name = f"{task.name}@{task.version}"
        label, detail = (
            (display, f"{name} · {_state(task.state)}") if display else (name, _state(task.state))
        )
        if task.attempts:  # attempts that failed
            detail += f" · {task.attempts} failed"
        tooltip = "\n".join(filter(None, [
            str(display or ""), name, f"task {task.id}", f"state {task.state}",
            f"runner {task.runner_id}" if task.runner_id else "",
            f"release {task.release_id}" if task.release_id else "",
        ]))  # fmt: skip
        box = _Box(label, detail, {task.state: 1}, task, tooltip)
        self.box_of[task.id] = box
        return box

    def _group_box(self, tasks: list[TaskInfo]) -> _Box:
        counts = _count(t.state for t in tasks)
        first = tasks[0]
        box = _Box(f"{len(tasks):,} × {first.name}@{first.version}", _summary(counts), counts,
                   tooltip=f"{len(tasks):,} tasks {first.name}@{first.version}\n{_summary(counts)}")  # fmt: skip
        for task in tasks:
            self.box_of[task.id] = box
        return box

    def _rest(self, tasks: list[TaskInfo], where: str) -> _Box:
        """One box for ``tasks`` and everything under them."""
        members = list(self._subtree(tasks))
        counts = _count(t.state for t in members)
        label = f"+ {len(members):,} more task{'s' if len(members) != 1 else ''}"
        if where == "below":
            label = f"{len(members):,} task{'s' if len(members) != 1 else ''} below"
        box = _Box(label, _summary(counts), counts, tooltip=f"{label}\n{_summary(counts)}")
        for task in members:
            self.box_of[task.id] = box
        return box

    def _subtree(self, tasks: Iterable[TaskInfo]) -> Iterable[TaskInfo]:
        stack = list(tasks)
        while stack:
            task = stack.pop()
            yield task
            stack += self.children.get(task.id, ())


def _layout(roots: list[_Box]) -> None:
    """Widths from the text, then positions: each subtree in its own column span, a parent
    centred over its first and last subtasks (a simple tidy tree; siblings never overlap)."""
    for root in roots:
        _measure(root)
    left = float(PAD)
    for root in roots:
        _place(root, left, 0)
        left += root.span + COLUMN_GAP


def _measure(box: _Box) -> None:
    detail_size = 11 if box.task else 10
    text = max(len(box.label) * CHAR_WIDTH, len(box.detail) * CHAR_WIDTH * detail_size / 12)
    box.width = min(max(text + 28, MIN_WIDTH), MAX_WIDTH)
    for child in box.children:
        _measure(child)
    below = sum(c.span for c in box.children) + COLUMN_GAP * max(len(box.children) - 1, 0)
    box.span = max(box.width, below)


def _place(box: _Box, left: float, depth: int) -> None:
    box.y = HEADER + PAD + depth * (BOX_HEIGHT + ROW_GAP)
    if not box.children:
        box.x = left + (box.span - box.width) / 2
        return
    below = sum(c.span for c in box.children) + COLUMN_GAP * (len(box.children) - 1)
    x = left + (box.span - below) / 2
    for child in box.children:
        _place(child, x, depth + 1)
        x += child.span + COLUMN_GAP
    centre = (box.children[0].centre + box.children[-1].centre) / 2
    box.x = min(max(centre - box.width / 2, left), left + box.span - box.width)


def _walk(root: _Box) -> Iterable[_Box]:
    stack = [root]
    while stack:
        box = stack.pop()
        yield box
        stack += reversed(box.children)


def _subtask_lines(box: _Box) -> list[str]:
    """Parent to subtasks: down to a bus halfway to the next row, across, down to each."""
    if not box.children:
        return []
    bottom = box.y + BOX_HEIGHT
    bus = bottom + ROW_GAP * 0.62
    first, last = box.children[0].centre, box.children[-1].centre
    path = f"M{box.centre:.1f},{bottom:.1f} V{bus:.1f} M{min(first, box.centre):.1f},{bus:.1f} H{max(last, box.centre):.1f}"
    path += "".join(f" M{c.centre:.1f},{bus:.1f} V{c.y:.1f}" for c in box.children)
    return [f'<path d="{path}" fill="none" stroke="{LINE_COLOUR}" stroke-width="1.2"/>']


def _dependency_arcs(tree: _Tree, boxes: list[_Box]) -> list[str]:
    """An arrow from each task waited for to each task waiting (one per pair of boxes)."""
    drawn: set[tuple[int, int]] = set()
    arcs = []
    for box in boxes:
        if box.task is None:
            continue
        for dependency in box.task.depends_on:
            source = tree.box_of.get(dependency)
            if source is None or source is box or (id(source), id(box)) in drawn:
                continue
            drawn.add((id(source), id(box)))
            arcs.append(_arc(source, box))
    return arcs


def _arc(source: _Box, target: _Box) -> str:
    direction = 1 if target.centre >= source.centre else -1
    x1 = source.centre + direction * min(18.0, source.width / 4)
    x2 = target.centre - direction * min(18.0, target.width / 4)
    y1, y2 = source.y + BOX_HEIGHT, target.y + BOX_HEIGHT
    depth = min(10 + abs(x2 - x1) * 0.08, ROW_GAP * 0.5)
    lowest = max(y1, y2) + depth
    return (
        f'<path class="dependency" d="M{x1:.1f},{y1:.1f} C{x1:.1f},{lowest:.1f} {x2:.1f},{lowest:.1f} '
        f'{x2:.1f},{y2 + 1:.1f}" fill="none" stroke="{DEPENDENCY_COLOUR}" stroke-width="1.4" '
        f'stroke-dasharray="4 3" marker-end="url(#tb-arrow)"/>'
    )


def _draw_box(box: _Box, link: Callable[[str], str] | None) -> str:
    state = box.task.state if box.task else _dominant(box.counts)
    accent, tint = STATE_COLOURS.get(state, UNKNOWN_COLOURS)
    if box.task is None:
        accent, tint = MUTED_COLOUR, "#ffffff"
    x, y, w = box.x, box.y, box.width
    kind = "task" if box.task else "group"
    attrs = (
        f' data-task-id="{escape(box.task.id)}" data-state="{escape(box.task.state)}"'
        if box.task
        else ""
    )
    parts = [
        f'<g class="{kind}"{attrs}><title>{escape(box.tooltip)}</title>',
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{BOX_HEIGHT}" rx="6" '
        f'fill="{tint}" stroke="{accent}" stroke-width="1.5"'
        + (' stroke-dasharray="5 3"' if box.task is None else "") + "/>",
    ]  # fmt: skip
    if box.task is not None:
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="5" height="{BOX_HEIGHT}" rx="2" fill="{accent}"/>'
        )
    parts.append(_text(x + 12, y + 18, _fit(box.label, w), TEXT_COLOUR, weight="600"))
    if box.task is None:
        parts += _bar(box.counts, x + 12, y + 26, w - 24)
        parts.append(
            _text(x + 12, y + BOX_HEIGHT - 5, _fit(box.detail, w, 10), MUTED_COLOUR, size=10)
        )
    else:
        parts.append(_text(x + 12, y + 35, _fit(box.detail, w, 11), MUTED_COLOUR, size=11))
    parts.append("</g>")
    drawn = "".join(parts)
    if box.task is not None and link is not None:
        drawn = f'<a href="{escape(link(box.task.id))}">{drawn}</a>'
    return drawn


def _bar(counts: dict[str, int], x: float, y: float, width: float) -> list[str]:
    """A stacked bar of ``counts`` by state, in state order."""
    total = sum(counts.values()) or 1
    parts = []
    for state in _ordered(counts):
        share = width * counts[state] / total
        colour = STATE_COLOURS.get(state, UNKNOWN_COLOURS)[0]
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(share, 1.0):.1f}" height="5" fill="{colour}"/>'
        )
        x += share
    return parts


def _legend(states: Sequence[str]) -> tuple[str, float]:
    """A swatch per state present, then the two kinds of line; and its width."""
    x, y = float(PAD), PAD + 34.0
    parts = []
    for state in _ordered(dict.fromkeys(states, 1)):
        colour = STATE_COLOURS.get(state, UNKNOWN_COLOURS)[0]
        parts.append(
            f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="10" height="10" rx="2" fill="{colour}"/>'
        )
        parts.append(_text(x + 14, y, _state(state), MUTED_COLOUR, size=11))
        x += 14 + len(_state(state)) * 6.6 + 16
    parts.append(f'<path d="M{x:.1f},{y - 4:.1f} h22" stroke="{LINE_COLOUR}" stroke-width="1.2"/>')
    parts.append(_text(x + 26, y, "subtask", MUTED_COLOUR, size=11))
    x += 26 + 7 * 6.6 + 16
    parts.append(
        f'<path d="M{x:.1f},{y - 4:.1f} h22" stroke="{DEPENDENCY_COLOUR}" stroke-width="1.4" '
        'stroke-dasharray="4 3" marker-end="url(#tb-arrow)"/>'
    )
    parts.append(_text(x + 28, y, "waits for (arrow into the waiting task)", MUTED_COLOUR, size=11))
    x += 28 + 39 * 6.6
    return '<g class="legend">' + "".join(parts) + "</g>", x - PAD


def _text(x: float, y: float, text: str, colour: str, weight: str = "400", size: int = 12) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" fill="{colour}" font-size="{size}" '
        f'font-weight="{weight}">{escape(text)}</text>'
    )


def _fit(text: str, width: float, size: int = 12) -> str:
    """``text`` cut to the width of its box, at font ``size``."""
    room = int((width - 20) / (CHAR_WIDTH * size / 12))
    return text if len(text) <= room else text[: max(room - 1, 1)] + "…"


def _small(group: list[TaskInfo]) -> list[TaskInfo | list[TaskInfo]]:
    return [group] if len(group) >= GROUP_AT else list(group)


def _state(state: str) -> str:
    return state.replace("_", " ")


def _count(states: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for state in states:
        counts[state] = counts.get(state, 0) + 1
    return counts


def _ordered(counts: dict[str, int]) -> list[str]:
    """States in lifecycle order, unknown ones last."""
    order = list(STATE_COLOURS)
    return sorted(counts, key=lambda s: order.index(s) if s in order else len(order))


def _summary(counts: dict[str, int]) -> str:
    return " · ".join(f"{counts[s]:,} {_state(s)}" for s in _ordered(counts))


def _dominant(counts: dict[str, int]) -> str:
    return max(counts, key=lambda s: counts[s]) if counts else "waiting"
