"""build_plan (order, layers, matrix instances, determinism) and workflow discovery."""

from __future__ import annotations

import textwrap

import pytest

from pipelines import build_plan, parse_workflow, workflow_paths
from pipelines.plan import JobInstance, Plan

STEPS = "    runs-on: x\n    steps: [{run: make}]\n"


def plan(text: str) -> Plan:
    return build_plan(parse_workflow(textwrap.dedent(text), "ci.yml"))


def jobs(*specs: str) -> str:
    """A workflow whose jobs are given as `id` or `id: needs-list`."""
    text = "on: push\njobs:\n"
    for spec in specs:
        job_id, _, needs = spec.partition(":")
        text += f"  {job_id}:\n" + (f"    needs: [{needs}]\n" if needs else "") + STEPS
    return text


# -- order and layers -------------------------------------------------------------------------


def test_single_job() -> None:
    result = plan(jobs("build"))
    assert [j.job_id for j in result.jobs] == ["build"]
    assert result.layers == (("build",),)
    assert result.jobs[0].instances == (JobInstance("build", "build", "build"),)


def test_topological_order_keeps_file_order_among_ready_jobs() -> None:
    result = plan(jobs("deploy:test,lint", "test:build", "lint", "build", "docs"))
    assert [j.job_id for j in result.jobs] == ["lint", "build", "test", "deploy", "docs"]


def test_layers_for_drawing_the_graph() -> None:
    result = plan(jobs("deploy:test,lint", "test:build", "lint", "build"))
    assert result.layers == (("lint", "build"), ("test",), ("deploy",))
    assert result.job("deploy").layer == 2


def test_needs_per_job() -> None:
    result = plan(jobs("a", "b:a", "c:a,b"))
    assert result.needs == {"a": (), "b": ("a",), "c": ("a", "b")}
    assert result.job("c").needs == ("a", "b")
    with pytest.raises(KeyError):
        result.job("zzz")


def test_diamond() -> None:
    result = plan(jobs("a", "b:a", "c:a", "d:b,c"))
    assert result.layers == (("a",), ("b", "c"), ("d",))


# -- matrix instances -------------------------------------------------------------------------


MATRIX = """\
on: push
jobs:
  build:
    name: Build
    strategy:
      fail-fast: false
      max-parallel: 2
      matrix:
        python: [3.10, '3.11']
        os: [ubuntu-latest]
        include:
          - python: 3.10
            experimental: true
          - python: pypy
            os: ubuntu-latest
{steps}"""


def test_matrix_instances() -> None:
    result = plan(MATRIX.format(steps=STEPS))
    build = result.job("build")
    assert build.display_name == "Build"
    assert build.fail_fast is False and build.max_parallel == 2
    assert build.instances is not None
    assert [(i.key, i.display_name) for i in build.instances] == [
        ("build-3.10-ubuntu-latest", "Build (3.10, ubuntu-latest)"),
        ("build-3.11-ubuntu-latest", "Build (3.11, ubuntu-latest)"),
        ("build-pypy-ubuntu-latest", "Build (pypy, ubuntu-latest)"),
    ]
    assert build.instances[0].matrix == {
        "python": "3.10",
        "os": "ubuntu-latest",
        "experimental": True,
    }


def test_instance_keys_are_unique_in_the_workflow() -> None:
    text = """\
    on: push
    jobs:
      build-a:
        runs-on: x
        steps: [{run: make}]
      build:
        strategy:
          matrix:
            v: [a, 'a!', 'a?']
        runs-on: x
        steps: [{run: make}]
    """
    result = plan(text)
    instances = result.job("build").instances
    assert instances is not None
    assert [i.key for i in instances] == ["build-a-2", "build-a-3", "build-a-4"]


def test_long_instance_keys_are_shortened() -> None:
    text = f"on: push\njobs:\n  build:\n    strategy:\n      matrix:\n        v: ['{'x' * 300}']\n"
    instances = plan(text + STEPS).job("build").instances
    assert instances is not None
    assert len(instances[0].key) == 100
    assert instances[0].key.startswith("build-xxx")


def test_nested_matrix_values_get_a_url_safe_key() -> None:
    text = "on: push\njobs:\n  build:\n    strategy:\n      matrix:\n"
    text += "        cfg: [{os: linux, arch: arm64}]\n"
    instances = plan(text + STEPS).job("build").instances
    assert instances is not None
    assert instances[0].key == "build-arch_arm64_os_linux"


def test_matrix_expression_is_planned_at_run_time() -> None:
    text = "on: push\njobs:\n  build:\n    strategy:\n      matrix: ${{ fromJSON(inputs.m) }}\n"
    result = plan(text + STEPS)
    assert result.job("build").instances is None


def test_strategy_without_matrix_is_one_instance() -> None:
    text = "on: push\njobs:\n  build:\n    strategy: {fail-fast: false}\n" + STEPS
    build = plan(text).job("build")
    assert build.instances == (JobInstance("build", "build", "build"),)
    assert build.fail_fast is False


# -- determinism ------------------------------------------------------------------------------


def test_same_text_gives_equal_plans() -> None:
    text = MATRIX.format(steps=STEPS) + "  test:\n    needs: build\n" + STEPS
    first, second = plan(text), plan(text)
    assert first == second
    assert hash(first) == hash(second)


# -- discovery --------------------------------------------------------------------------------


def test_cicd_workflows_are_found_sorted() -> None:
    paths = [
        ".cicd/workflows/z.yml",
        ".cicd/workflows/a.yaml",
        ".cicd/workflows/nested/x.yml",
        ".cicd/workflows/readme.md",
        ".github/workflows/ci.yml",
        "src/.cicd/workflows/other.yml",
    ]
    assert workflow_paths(paths) == [".cicd/workflows/a.yaml", ".cicd/workflows/z.yml"]


def test_github_workflows_are_the_fallback() -> None:
    paths = [".github/workflows/ci.yml", ".github/workflows/deploy.yaml", ".cicd/README.md"]
    assert workflow_paths(paths) == [".github/workflows/ci.yml", ".github/workflows/deploy.yaml"]


def test_no_workflows() -> None:
    assert workflow_paths(["README.md", ".github/dependabot.yml", ".github/workflows/.yml"]) == []


def test_leading_dot_slash_is_ignored_and_duplicates_removed() -> None:
    paths = ["./.cicd/workflows/ci.yml", ".cicd/workflows/ci.yml"]
    assert workflow_paths(iter(paths)) == [".cicd/workflows/ci.yml"]
