"""Property tests: whatever text comes in, the parser answers with a Workflow or a WorkflowError,
and the same text always gives the same workflow and the same plan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.errors import WorkflowError
from pipelines.model import Workflow
from pipelines.parser import parse_workflow
from pipelines.plan import build_plan

CORPUS = Path(__file__).parent / "corpus"
SEED_TEXTS = [
    path.read_text(encoding="utf-8")
    for path in sorted(CORPUS.glob("*/*.y*ml"))
    if path.stat().st_size < 8192
] or ["on: push\njobs:\n  build:\n    runs-on: x\n    steps:\n      - run: make\n"]

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Words that steer random documents into the parser's deeper paths.
KEYS = [
    "on", "jobs", "name", "env", "needs", "runs-on", "steps", "run", "uses", "with", "if",
    "strategy", "matrix", "include", "exclude", "services", "image", "container", "push",
    "branches", "paths", "schedule", "cron", "workflow_dispatch", "inputs", "type", "options",
    "default", "timeout-minutes", "retry", "max-attempts", "concurrency", "group", "id",
    "shell", "outputs", "environment", "build", "test", "defaults", "permissions",
]  # fmt: skip
SCALAR_WORDS = [
    "push", "build", "test", "ubuntu-latest", "3.10", "yes", "on", "${{ github.sha }}",
    "${{ foo.bar }}", "${{ matrix.os", "actions/checkout@v4", "./local", "0 3 * * *",
    "61 * * * *", "bash", "zsh", "choice", "boolean", "**/*.py", "[z-a]", "",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 400),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from(SCALAR_WORDS),
    st.text(max_size=12),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(min_size=1, max_size=8))
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(keys, children, max_size=5),
    ),
    max_leaves=40,
)


def _parse(text: str) -> Workflow | None:
    try:
        return parse_workflow(text, "random.yml", matrix_cap=64)
    except WorkflowError as error:
        assert error.problems, "a WorkflowError must carry at least one problem"
        for problem in error.problems:
            assert problem.line >= 1 and problem.column >= 1
            assert problem.message
        return None


def _job(draw: st.DrawFn, job_id: str, others: list[str]) -> dict[str, Any]:
    job: dict[str, Any] = {
        "runs-on": draw(st.sampled_from(["ubuntu-latest", ["self-hosted", "linux"]])),
        "steps": draw(
            st.lists(
                st.one_of(
                    st.fixed_dictionaries(
                        {"run": st.sampled_from(["make", "echo ${{ matrix.v }}"])}
                    ),
                    st.fixed_dictionaries(
                        {"uses": st.sampled_from(["actions/checkout@v4", "./x"])}
                    ),
                ),
                min_size=1,
                max_size=3,
            )
        ),
    }
    if others and draw(st.booleans()):
        job["needs"] = draw(st.lists(st.sampled_from(others), max_size=3))
    if draw(st.booleans()):
        job["strategy"] = {
            "matrix": draw(
                st.dictionaries(
                    st.sampled_from(["os", "v", "include", "exclude"]),
                    st.lists(
                        st.one_of(st.sampled_from(["a", "b", "3.10"]), st.integers(0, 3)),
                        max_size=4,
                    )
                    | st.lists(
                        st.fixed_dictionaries({"v": st.sampled_from(["a", "b", 1])}), max_size=2
                    ),
                    max_size=3,
                )
            )
        }
    return job


@st.composite
def workflow_texts(draw: st.DrawFn) -> str:
    """Workflow-shaped documents: valid ones and near misses (cycles, bad matrices...)."""
    job_ids = draw(
        st.lists(
            st.sampled_from(["build", "test", "lint", "deploy", "docs"]),
            min_size=1,
            max_size=5,
            unique=True,
        )
    )
    jobs = {job_id: _job(draw, job_id, job_ids) for job_id in job_ids}
    return yaml.safe_dump({"on": "push", "jobs": jobs}, sort_keys=False)


@SETTINGS
@given(st.text(max_size=300))
def test_random_text_gives_a_workflow_or_a_workflow_error(text: str) -> None:
    _parse(text)


@SETTINGS
@given(documents)
def test_random_yaml_documents_give_a_workflow_or_a_workflow_error(document: Any) -> None:
    _parse(yaml.safe_dump(document, sort_keys=False))


@SETTINGS
@given(st.dictionaries(st.sampled_from(["on", "jobs", "name", "env"]), documents, min_size=1))
def test_random_top_level_mappings_give_a_workflow_or_a_workflow_error(document: Any) -> None:
    _parse(yaml.safe_dump(document, sort_keys=False))


@SETTINGS
@given(st.sampled_from(SEED_TEXTS), st.data())
def test_mutated_corpus_files_give_a_workflow_or_a_workflow_error(
    text: str, data: st.DataObject
) -> None:
    position = data.draw(st.integers(0, len(text)))
    cut = data.draw(st.integers(0, 8))
    insert = data.draw(
        st.sampled_from(["", " ", "\t", ":", "-", "${{", "}}", "'", '"', "\n", "[", "&a", "*a"])
    )
    _parse(text[:position] + insert + text[position + cut :])


@SETTINGS
@given(workflow_texts())
def test_parse_then_plan_is_deterministic(text: str) -> None:
    first = _parse(text)
    second = _parse(text)
    assert first == second
    if first is not None:
        assert build_plan(first) == build_plan(second)
        assert hash(build_plan(first)) == hash(build_plan(second))
