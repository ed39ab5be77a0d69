"""The run page's job graph: jobs laid out in columns by `needs`, for an inline SVG.

A job sits one column right of the furthest job it needs; the instances of a matrix job share
one box, with a row each. Edges run from the right of a needed box to the left of the box that
needs it; one that skips columns runs below the boxes in between.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pipelines import WorkflowError
from runs.models import Job, Run
from runs.scheduling import workflow_of
from runs.states import State

# How a box of several job instances (a matrix) shows: the first state of this order that one
# of its instances is in. static/js/run.js gets it from the page.
GROUP_STATE_ORDER = (
    State.RUNNING,
    State.FAILURE,
    State.TIMED_OUT,
    State.CANCELLED,
    State.WAITING,
    State.QUEUED,
    State.PENDING,
    State.SUCCESS,
    State.SKIPPED,
)

NODE_WIDTH = 230
HEADER_HEIGHT = 30
ROW_HEIGHT = 26
COLUMN_GAP = 70
NODE_GAP = 22
MARGIN = 16


@dataclass
class GraphRow:
    job: Job
    url: str
    y: int


@dataclass
class GraphNode:
    """One workflow job: a box, with one row per job instance (several for a matrix)."""

    workflow_job_id: str
    name: str
    state: str
    layer: int
    rows: list[GraphRow]
    x: int = 0
    y: int = 0
    height: int = 0
    needs: tuple[str, ...] = ()

    width = NODE_WIDTH

    @property
    def count_x(self) -> int:
        return self.x + NODE_WIDTH - 12

    @property
    def row_width(self) -> int:
        return NODE_WIDTH - 2

    @property
    def is_matrix(self) -> bool:
        return len(self.rows) > 1 or bool(self.rows and self.rows[0].job.matrix)


@dataclass
class GraphEdge:
    source: str
    target: str
    path: str


@dataclass
class JobGraph:
    nodes: list[GraphNode]
    edges: list[GraphEdge]
    width: int
    height: int


def group_state(states: Iterable[str]) -> str:
    present = set(states)
    return next((state for state in GROUP_STATE_ORDER if state in present), State.PENDING)


def job_graph(run: Run, jobs: list[Job], job_url: Callable[[Job], str]) -> JobGraph:
    """The jobs laid out in columns by `needs`: a job sits one column right of the furthest
    job it needs; the instances of a matrix job share one box."""
    instances: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        instances[job.workflow_job_id].append(job)
    needs = {
        workflow_job_id: tuple(need for need in members[0].needs if need in instances)
        for workflow_job_id, members in instances.items()
    }
    layers: dict[str, int] = {}

    def layer_of(workflow_job_id: str, seen: frozenset[str] = frozenset()) -> int:
        if workflow_job_id not in layers:
            if workflow_job_id in seen:  # `needs` is acyclic once parsed; never loop anyway
                return 0
            below = [layer_of(need, seen | {workflow_job_id}) for need in needs[workflow_job_id]]
            layers[workflow_job_id] = 1 + max(below) if below else 0
        return layers[workflow_job_id]

    names = _workflow_job_names(run)
    columns: dict[int, list[GraphNode]] = defaultdict(list)
    nodes: dict[str, GraphNode] = {}
    for workflow_job_id, members in instances.items():
        single = len(members) == 1 and not members[0].matrix
        node = GraphNode(
            workflow_job_id=workflow_job_id,
            name=members[0].name if single else names.get(workflow_job_id, workflow_job_id),
            state=group_state(job.state for job in members),
            layer=layer_of(workflow_job_id),
            rows=[GraphRow(job, job_url(job), 0) for job in members],
            needs=needs[workflow_job_id],
        )
        nodes[workflow_job_id] = node
        columns[node.layer].append(node)
    height = 0
    for layer, column in sorted(columns.items()):
        y = MARGIN
        for node in column:
            node.x = MARGIN + layer * (NODE_WIDTH + COLUMN_GAP)
            node.y = y
            top = y + (HEADER_HEIGHT if node.is_matrix else 0)
            for index, row in enumerate(node.rows):
                row.y = top + index * ROW_HEIGHT
            node.height = (HEADER_HEIGHT if node.is_matrix else 0) + ROW_HEIGHT * len(node.rows)
            node.height = max(node.height, HEADER_HEIGHT)
            y += node.height + NODE_GAP
        height = max(height, y - NODE_GAP + MARGIN)
    bottoms = {
        layer: max(node.y + node.height for node in column) for layer, column in columns.items()
    }
    edges = []
    for node in nodes.values():
        for need in node.needs:
            source = nodes[need]
            path, lowest = _edge_path(source, node, bottoms)
            height = max(height, lowest + MARGIN)
            edges.append(GraphEdge(need, node.workflow_job_id, path))
    width = 0
    if columns:
        width = MARGIN * 2 + (max(columns) + 1) * (NODE_WIDTH + COLUMN_GAP) - COLUMN_GAP
    return JobGraph(list(nodes.values()), edges, width, height)


def _edge_path(source: GraphNode, target: GraphNode, bottoms: dict[int, int]) -> tuple[str, float]:
    """An SVG path from the right of `source` to the left of `target`, and its lowest point.

    Between neighbouring columns it is one curve. An edge that skips columns runs below the
    boxes of the columns in between, so it never seems to enter a job it does not need.
    """
    x1, y1 = source.x + NODE_WIDTH, source.y + source.height / 2
    x2, y2 = target.x, target.y + target.height / 2
    skipped = range(source.layer + 1, target.layer)
    if not skipped:
        middle = (x1 + x2) / 2
        return f"M{x1:g},{y1:g} C{middle:g},{y1:g} {middle:g},{y2:g} {x2:g},{y2:g}", max(y1, y2)
    below = max(bottoms.get(layer, 0) for layer in skipped) + NODE_GAP / 2
    bend = COLUMN_GAP / 2
    return (
        f"M{x1:g},{y1:g} C{x1 + bend:g},{y1:g} {x1 + bend:g},{below:g} {x1 + COLUMN_GAP:g},"
        f"{below:g} L{x2 - COLUMN_GAP:g},{below:g} C{x2 - bend:g},{below:g} {x2 - bend:g},"
        f"{y2:g} {x2:g},{y2:g}",
        below,
    )


def _workflow_job_names(run: Run) -> dict[str, str]:
    """The names of the workflow's jobs as written (a matrix box shows it, not an instance's)."""
    try:
        workflow = workflow_of(run.workflow_source, run.workflow_path)
    except WorkflowError:
        return {}
    return {job_id: job.display_name for job_id, job in workflow.jobs.items()}
