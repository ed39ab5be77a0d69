"""The workflow language: workflow files in, validated plans (or every problem) out."""

from __future__ import annotations

from pipelines.actions import parse_action
from pipelines.discovery import workflow_paths
from pipelines.errors import Problem, WorkflowError
from pipelines.parser import parse_workflow
from pipelines.plan import Plan, build_plan

__all__ = [
    "Plan",
    "Problem",
    "WorkflowError",
    "build_plan",
    "parse_action",
    "parse_workflow",
    "workflow_paths",
]
