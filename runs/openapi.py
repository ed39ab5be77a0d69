"""The OpenAPI 3.1 description of the JSON API, served as /api/v1/openapi.json.

Written by hand next to the views. tests/api/test_openapi.py checks that every route of
`runs.api_urls` is described with exactly the methods it answers, and validates real responses
against the schemas here, so the two cannot drift apart silently.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse

from deployments import api as deployments
from deployments.models import Approval, Deployment, EnvironmentGate
from runs.api import caches
from runs.api.http import endpoint
from runs.api.views import (
    DEFAULT_LOG_LINES,
    DEFAULT_PAGE,
    MAX_LOG_LINES,
    MAX_PAGE,
)
from runs.models import RepositoryRole
from runs.states import State

VERSION = "1.0.0"
JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **extra}


def _object(properties: dict[str, Any], *, required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
    }


_TIME = _nullable("string", format="date-time")
_STATE = {"type": "string", "enum": list(State.values)}

SCHEMAS: dict[str, Any] = {
    "Error": _object(
        {
            "error": {"type": "string", "description": "what went wrong, for people"},
            "problems": {"type": "array", "items": {"type": "string"}},
            "fields": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "parameter or body field name -> what is wrong with it",
            },
        }
    ),
    "Run": _object(
        {
            "id": {"type": "integer"},
            "number": {"type": "integer", "description": "1, 2, 3... per repository"},
            "repository": {"type": "string", "examples": ["acme/widgets"]},
            "workflow": {"type": "string", "description": "the workflow file's path"},
            "workflow_name": {"type": "string"},
            "event": {"type": "string", "examples": ["push", "pull_request"]},
            "ref": {"type": "string"},
            "branch": _nullable("string", description="the branch of a refs/heads/ ref"),
            "sha": {"type": "string"},
            "actor": {"type": "string"},
            "attempt": {"type": "integer", "description": "the latest attempt (re-runs add one)"},
            "state": _STATE,
            "error": {"type": "string"},
            "inputs": {"type": "object"},
            "from_fork": {"type": "boolean"},
            "created_at": {"type": "string", "format": "date-time"},
            "started_at": _TIME,
            "finished_at": _TIME,
            "duration_seconds": _nullable("number"),
        }
    ),
    "Job": _object(
        {
            "id": {"type": "integer"},
            "run": {"type": "integer"},
            "attempt": {"type": "integer", "description": "the run attempt it belongs to"},
            "key": {"type": "string"},
            "name": {"type": "string"},
            "workflow_job_id": {"type": "string"},
            "matrix": {"type": "object"},
            "needs": {"type": "array", "items": {"type": "string"}},
            "runs_on": {"type": "array"},
            "state": _STATE,
            "error": {"type": "string"},
            "retry_attempt": {"type": "integer"},
            "runner": {"type": "string", "description": "the worker that took it"},
            "queued_at": _TIME,
            "started_at": _TIME,
            "finished_at": _TIME,
            "duration_seconds": _nullable("number"),
        }
    ),
    "Step": _object(
        {
            "index": {"type": "integer"},
            "name": {"type": "string"},
            "state": _STATE,
            "outcome": {"type": "string"},
            "exit_code": _nullable("integer"),
            "error": {"type": "string"},
            "summary": {"type": "string", "description": "GITHUB_STEP_SUMMARY (Markdown)"},
            "started_at": _TIME,
            "finished_at": _TIME,
        }
    ),
    "LogLine": _object(
        {
            "n": {"type": "integer", "minimum": 1, "description": "line number, 1-based"},
            "ts": _nullable("string", format="date-time"),
            "stream": {
                "type": "string",
                "description": "stdout, stderr, system, group (text = its title), endgroup, "
                "error, warning or notice (annotations)",
            },
            "text": {"type": "string", "description": "raw, with ANSI colour escapes"},
            "step": _nullable("integer", description="step index; null for job set-up"),
            "properties": {
                "type": "object",
                "description": "annotation location: file, line, end_line, column, end_column, "
                "title",
            },
        },
        required=["n", "ts", "stream", "text", "step"],
    ),
    "LogPage": _object(
        {
            "job": {"type": "integer"},
            "state": _STATE,
            "offset": {"type": "integer", "description": "0-based index of the first line"},
            "lines": {"type": "array", "items": _ref("LogLine")},
            "next_offset": {"type": "integer", "description": "the offset to ask for next"},
            "complete": {
                "type": "boolean",
                "description": "the job has ended and there are no more lines",
            },
            "removed": _nullable(
                "string",
                description="why there are no lines: 'this log was removed by retention on DATE'",
            ),
        }
    ),
    "RunList": _object(
        {
            "runs": {"type": "array", "items": _ref("Run")},
            "next": _nullable("integer", description="pass as `after` for the next page"),
        }
    ),
    "RunDetail": _object(
        {
            "run": _ref("Run"),
            "attempt": {"type": "integer", "description": "the attempt whose jobs are listed"},
            "jobs": {"type": "array", "items": _ref("Job")},
        }
    ),
    "JobDetail": _object(
        {
            "job": _ref("Job"),
            "run": _ref("Run"),
            "steps": {"type": "array", "items": _ref("Step")},
        }
    ),
    "RunChange": _object({"run": _ref("Run")}),
    "JobChange": _object({"job": _ref("Job")}),
    "Artifact": _object(
        {
            "id": {"type": "integer"},
            "name": {"type": "string"},
            "run": {"type": "integer"},
            "attempt": {"type": "integer", "description": "the run attempt that uploaded it"},
            "job": _nullable("integer", description="the job that uploaded it"),
            "size": {"type": "integer", "description": "bytes of its files, uncompressed"},
            "file_count": {"type": "integer"},
            "digest": {"type": "string", "description": "SHA-256 of the stored archive"},
            "created_at": {"type": "string", "format": "date-time"},
            "expires_at": {"type": "string", "format": "date-time"},
            "expired": {"type": "boolean"},
            "download_url": _nullable("string", description="the zip; null once expired"),
        }
    ),
    "Artifacts": _object({"artifacts": {"type": "array", "items": _ref("Artifact")}}),
    "CacheEntry": _object(
        {
            "id": {"type": "integer"},
            "key": {"type": "string"},
            "ref": {
                "type": "string",
                "description": "the git ref of the run that saved it: its scope",
                "examples": ["refs/heads/main", "refs/pull/7/head"],
            },
            "branch": _nullable("string", description="the branch of a refs/heads/ ref"),
            "version": {"type": "string", "description": "a hash of the cached paths"},
            "size": {"type": "integer", "description": "bytes of the stored archive"},
            "run": _nullable("integer", description="the run that saved it"),
            "created_at": {"type": "string", "format": "date-time"},
            "last_used_at": {"type": "string", "format": "date-time"},
        }
    ),
    "CacheList": _object(
        {
            "caches": {"type": "array", "items": _ref("CacheEntry")},
            "next": _nullable("integer", description="pass as `after` for the next page"),
            "total_count": {"type": "integer", "description": "entries the repository keeps"},
            "total_size": {"type": "integer", "description": "bytes of all of its entries"},
            "size_limit": {
                "type": "integer",
                "description": "bytes kept per repository; beyond, the least recently used "
                "entries are evicted",
            },
            "entry_size_limit": {"type": "integer", "description": "bytes per entry at most"},
        }
    ),
    "CacheDeletion": _object(
        {
            "deleted": {"type": "integer", "description": "entries deleted"},
            "deleted_size": {
                "type": "integer",
                "description": "their bytes (storage shared with other entries or artifacts "
                "is kept; the rest is freed when unreferenced blobs are pruned)",
            },
        }
    ),
    "RepositoryUsage": _object(
        {
            "repository": {"type": "string", "examples": ["acme/widgets"]},
            "artifact_count": {"type": "integer"},
            "artifact_bytes": {"type": "integer", "description": "bytes of stored archives"},
            "cache_count": {"type": "integer"},
            "cache_bytes": {"type": "integer", "description": "bytes of stored archives"},
            "log_lines": {"type": "integer"},
            "log_bytes": {"type": "integer", "description": "characters of stored log lines"},
            "total_bytes": {"type": "integer", "description": "artifacts + caches + logs"},
        }
    ),
    "WorkerUsage": _object(
        {
            "name": {"type": "string"},
            "executor": {"type": "string"},
            "busy": {"type": "boolean", "description": "running a job now"},
            "last_heartbeat": _TIME,
            "workspace_bytes": _nullable("integer", description="under its work directory"),
            "disk_free_bytes": _nullable("integer", description="on its data directory's disk"),
            "disk_total_bytes": _nullable("integer"),
            "storage_reported_at": _TIME,
        }
    ),
    "Usage": _object(
        {
            "repositories": {"type": "array", "items": _ref("RepositoryUsage")},
            "workers": {
                "type": "array",
                "items": _ref("WorkerUsage"),
                "description": "workers heard from in the last day",
            },
            "blobs": _object(
                {
                    "count": {"type": "integer"},
                    "bytes": {
                        "type": "integer",
                        "description": "stored once per content (artifacts and caches share)",
                    },
                }
            ),
        }
    ),
    "User": _object(
        {
            "username": {"type": "string"},
            "via": {"type": "string", "enum": ["token", "session"]},
            "scopes": {"type": "array", "items": {"type": "string", "enum": ["read", "write"]}},
            "token": {
                "oneOf": [
                    {"type": "null"},
                    _object({"name": {"type": "string"}, "prefix": {"type": "string"}}),
                ]
            },
        }
    ),
    "DispatchRequest": _object(
        {
            "workflow": {"type": "string", "examples": [".cicd/workflows/deploy.yml"]},
            "ref": {"type": "string", "maxLength": 255, "description": "default: default branch"},
            "inputs": {"type": "object", "description": "workflow_dispatch inputs by name"},
            "request_id": {
                "type": "string",
                "maxLength": 255,
                "description": "a retried request with the same id returns the same run",
            },
        },
        required=["workflow"],
    ),
    "RerunRequest": _object({"failed_only": {"type": "boolean", "default": False}}, required=[]),
    "ReviewRequest": _object(
        {
            "comment": {
                "type": "string",
                "maxLength": deployments.MAX_COMMENT,
                "description": "optional to approve; required to reject (the job fails with it)",
            }
        },
        required=[],
    ),
    "Approval": _object(
        {
            "reviewer": {"type": "string"},
            "decision": {"type": "string", "enum": [value for value, _ in Approval.DECISIONS]},
            "comment": {"type": "string"},
            "at": {"type": "string", "format": "date-time"},
        }
    ),
    "Gate": _object(
        {
            "environment": {"type": "string"},
            "state": {
                "type": "string",
                "enum": [value for value, _ in EnvironmentGate.STATES],
                "description": "pending (waiting), approved (passed), rejected (by a reviewer) "
                "or refused (by the rules, e.g. a ref not allowed)",
            },
            "url": {"type": "string", "description": "`environment.url` as rendered"},
            "entered_at": {"type": "string", "format": "date-time"},
            "wait_until": {
                "type": "string",
                "format": "date-time",
                "description": "when the environment's wait timer lets the job go",
            },
            "decided_at": _TIME,
            "reason": {"type": "string", "description": "why it was refused or rejected"},
            "approvals": {"type": "array", "items": _ref("Approval")},
        }
    ),
    "ReviewResult": _object(
        {"job": _ref("Job"), "approval": _ref("Approval"), "gate": _ref("Gate")}
    ),
    "EnvironmentRules": _object(
        {
            "required_approvals": {"type": "integer", "description": "N of the reviewers; 0: none"},
            "reviewers": {"type": "array", "items": {"type": "string"}},
            "reviewer_role": _nullable(
                "string",
                enum=[value for value, _ in RepositoryRole.ROLES] + [None],
                description="users with this role or a higher one may review too",
            ),
            "prevent_self_review": {"type": "boolean"},
            "allowed_refs": {
                "type": "array",
                "items": {"type": "string"},
                "description": "branch or tag patterns allowed to deploy; empty: any",
            },
            "wait_timer_minutes": {"type": "integer"},
        }
    ),
    "Deployment": _object(
        {
            "id": {"type": "integer"},
            "environment": {"type": "string"},
            "repository": {"type": "string"},
            "state": {"type": "string", "enum": [value for value, _ in Deployment.STATES]},
            "strategy": {"type": "string", "examples": ["rolling", "blue-green", "canary"]},
            "image": {"type": "string", "description": "the image as the workflow named it"},
            "image_digest": {"type": "string", "description": "the image id deployed"},
            "sha": {"type": "string"},
            "ref": {"type": "string"},
            "run": _nullable("integer", description="null for a rollback"),
            "run_number": _nullable("integer"),
            "job": _nullable("integer"),
            "triggered_by": {"type": "string"},
            "rollback_of": _nullable(
                "integer", description="the deployment whose version a rollback restores"
            ),
            "skip_analysis": {"type": "boolean"},
            "reason": {"type": "string", "description": "why it failed or was rolled back"},
            "traffic": {
                "type": "object",
                "additionalProperties": {"type": "integer"},
                "description": "percent of the traffic per version, now",
            },
            "created_at": {"type": "string", "format": "date-time"},
            "started_at": _TIME,
            "finished_at": _TIME,
            "duration_seconds": _nullable("number"),
        }
    ),
    "DeploymentStep": _object(
        {
            "index": {"type": "integer"},
            "name": {"type": "string"},
            "outcome": {"type": "string", "description": "empty while it runs"},
            "detail": {"type": "object", "description": "what the step measured"},
            "started_at": {"type": "string", "format": "date-time"},
            "finished_at": _TIME,
            "duration_seconds": _nullable("number"),
        }
    ),
    "DeploymentDetail": _object(
        {
            "deployment": _ref("Deployment"),
            "request": {
                "type": "object",
                "description": "the cicd/deploy inputs (container environment values hidden)",
            },
            "approvals": {"type": "array", "items": {"type": "object"}},
            "steps": {"type": "array", "items": _ref("DeploymentStep")},
            "log": {"type": "string", "description": "what a rollback said (it has no job log)"},
        }
    ),
    "DeploymentList": _object(
        {
            "deployments": {"type": "array", "items": _ref("Deployment")},
            "next": _nullable("integer", description="pass as `after` for the next page"),
        }
    ),
    "DeploymentChange": _object({"deployment": _ref("Deployment")}),
    "Environment": _object(
        {
            "name": {"type": "string"},
            "repository": {"type": "string"},
            "url": {"type": "string", "description": "the last deployment's url"},
            "rules": _ref("EnvironmentRules"),
            "current": {
                "oneOf": [{"type": "null"}, _ref("Deployment")],
                "description": "what runs there now: the latest successful deployment",
            },
            "lock": {
                "oneOf": [
                    {"type": "null"},
                    _object(
                        {
                            "deployment": {"type": "integer"},
                            "expires_at": _TIME,
                        }
                    ),
                ],
                "description": "the deployment holding the deployment lock, and its lease",
            },
            "waiting": {"type": "integer", "description": "jobs waiting at its rules"},
            "created_at": {"type": "string", "format": "date-time"},
        }
    ),
    "EnvironmentList": _object({"environments": {"type": "array", "items": _ref("Environment")}}),
    "WaitingJob": _object(
        {
            "job": _ref("Job"),
            "run_number": {"type": "integer"},
            "ref": {"type": "string"},
            "sha": {"type": "string"},
            "actor": {"type": "string"},
            "gate": _ref("Gate"),
        }
    ),
    "EnvironmentDetail": _object(
        {
            "environment": _ref("Environment"),
            "active": {
                "type": "array",
                "items": _ref("Deployment"),
                "description": "deployments queued or in progress, oldest first",
            },
            "waiting_jobs": {"type": "array", "items": _ref("WaitingJob")},
        }
    ),
    "RollbackRequest": _object(
        {"skip_analysis": {"type": "boolean", "default": False}}, required=[]
    ),
    "Empty": _object({}, required=[]),
}

_ERRORS = {
    "400": "bad query parameters or body (`fields` names them)",
    "401": "no valid token or session (or an unknown or revoked token)",
    "403": "the token lacks the scope, the CSRF check failed, or the role is too low",
    "404": "no such thing, or a private repository the caller may not read",
    "409": "not possible in the current state",
    "410": "it existed but has expired",
    "422": "the request is well formed but cannot be carried out",
}


def _error(status: str) -> dict[str, Any]:
    return {"$ref": f"#/components/responses/E{status}"}


def _ok(description: str, schema: str, status: str = "200") -> dict[str, Any]:
    return {status: {"description": description, "content": {JSON: {"schema": _ref(schema)}}}}


def _operation(
    summary: str,
    operation_id: str,
    responses: dict[str, Any],
    *,
    errors: tuple[str, ...],
    parameters: list[dict[str, Any]] | None = None,
    body: str | None = None,
    description: str = "",
    tag: str = "runs",
    public: bool = False,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "tags": [tag],
        "summary": summary,
        "operationId": operation_id,
        "responses": {**responses, **{status: _error(status) for status in errors}},
    }
    if description:
        operation["description"] = description
    if parameters:
        operation["parameters"] = parameters
    if body:
        operation["requestBody"] = {
            "required": False,
            "content": {JSON: {"schema": _ref(body)}},
        }
    if public:
        operation["security"] = []
    return operation


def _path_id(name: str, what: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": what,
        "schema": {"type": "integer", "minimum": 1},
    }


def _path_text(name: str, what: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": what,
        "schema": {"type": "string"},
    }


def _query(name: str, schema: dict[str, Any], what: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": what, "schema": schema}


RUN_ID = _path_id("run_id", "the run's id (not its number)")
JOB_ID = _path_id("job_id", "the job's id")
ARTIFACT_ID = _path_id("artifact_id", "the artifact's id (from the run's artifact list)")
CACHE_ID = _path_id("cache_id", "the cache entry's id (from the repository's cache list)")
DEPLOYMENT_ID = _path_id("deployment_id", "the deployment's id")
ENVIRONMENT = _path_text("name", "the environment's name")
ORGANISATION = _path_text("organisation", "the organisation's slug")
REPOSITORY = _path_text("repository", "the repository's slug")
RUN_FILTERS = [
    _query("status", _STATE, "only runs in this state"),
    _query("branch", {"type": "string"}, "only runs of this branch (or full ref)"),
    _query("workflow", {"type": "string"}, "only runs of this workflow (path or name)"),
    _query("event", {"type": "string"}, "only runs started by this event"),
    _query("after", {"type": "integer", "minimum": 1}, "the `next` of the previous page"),
    _query(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_PAGE},
        "runs per page",
    ),
]
_READ_ERRORS = ("400", "401", "403", "404")
_WRITE_ERRORS = ("400", "401", "403", "404", "409")


def _paths() -> dict[str, Any]:
    run_list = _ok("runs, newest first", "RunList")
    return {
        "/api/v1/openapi.json": {
            "get": _operation(
                "This document",
                "openapi",
                {"200": {"description": "OpenAPI 3.1", "content": {JSON: {"schema": {}}}}},
                errors=(),
                tag="meta",
                public=True,
            )
        },
        "/api/v1/user": {
            "get": _operation(
                "Who the token or session belongs to",
                "currentUser",
                _ok("the user", "User"),
                errors=("400", "401"),
                tag="meta",
            )
        },
        "/api/v1/usage": {
            "get": _operation(
                "Storage usage of every repository, worker and blob storage",
                "getUsage",
                _ok("usage", "Usage"),
                errors=("400", "401", "403"),
                tag="usage",
                description="Staff and superusers only.",
            )
        },
        "/api/v1/repos/{organisation}/{repository}/usage": {
            "get": _operation(
                "Storage usage of one repository",
                "getRepositoryUsage",
                _ok("what the repository keeps", "RepositoryUsage"),
                errors=_READ_ERRORS,
                parameters=[ORGANISATION, REPOSITORY],
                tag="usage",
            )
        },
        "/api/v1/runs": {
            "get": _operation(
                "List runs of every readable repository",
                "listRuns",
                run_list,
                errors=_READ_ERRORS,
                parameters=[
                    _query("repository", {"type": "string"}, "organisation/repository"),
                    *RUN_FILTERS,
                ],
                description="Keyset pagination on id, newest first: pass `next` as `after`.",
            )
        },
        "/api/v1/repos/{organisation}/{repository}/runs": {
            "get": _operation(
                "List runs of one repository",
                "listRepositoryRuns",
                run_list,
                errors=_READ_ERRORS,
                parameters=[ORGANISATION, REPOSITORY, *RUN_FILTERS],
            )
        },
        "/api/v1/repos/{organisation}/{repository}/dispatches": {
            "post": _operation(
                "Start a workflow with workflow_dispatch inputs",
                "dispatchWorkflow",
                _ok("the run started (or the one of the same request_id)", "Run", "201"),
                errors=(*_WRITE_ERRORS, "422"),
                parameters=[ORGANISATION, REPOSITORY],
                body="DispatchRequest",
                description="Needs the write role; 404 for an unknown workflow file, 422 for "
                "inputs or refs that do not fit the workflow.",
            )
        },
        "/api/v1/repos/{organisation}/{repository}/caches": {
            "get": _operation(
                "List a repository's cache entries",
                "listCaches",
                _ok("entries, newest first, and the repository's total and limit", "CacheList"),
                errors=_READ_ERRORS,
                parameters=[
                    ORGANISATION,
                    REPOSITORY,
                    _query("key", {"type": "string"}, "only entries whose key starts with this"),
                    _query("ref", {"type": "string"}, "only entries of this branch (or full ref)"),
                    _query(
                        "after",
                        {"type": "integer", "minimum": 1},
                        "the `next` of the previous page",
                    ),
                    _query(
                        "limit",
                        {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": caches.MAX_PAGE,
                            "default": caches.DEFAULT_PAGE,
                        },
                        "entries per page",
                    ),
                ],
                tag="caches",
            ),
            "delete": _operation(
                "Delete the cache entries of a key",
                "deleteCachesByKey",
                _ok("what was deleted", "CacheDeletion"),
                errors=_READ_ERRORS,
                parameters=[
                    ORGANISATION,
                    REPOSITORY,
                    {
                        "name": "key",
                        "in": "query",
                        "required": True,
                        "description": "the complete key (every version of it is deleted)",
                        "schema": {"type": "string"},
                    },
                    _query("ref", {"type": "string"}, "only the entries of this branch (or ref)"),
                ],
                body="Empty",
                description="Needs the admin role; 404 when no entry has this key.",
                tag="caches",
            ),
        },
        "/api/v1/repos/{organisation}/{repository}/caches/{cache_id}": {
            "delete": _operation(
                "Delete a cache entry",
                "deleteCache",
                _ok("what was deleted", "CacheDeletion"),
                errors=_READ_ERRORS,
                parameters=[ORGANISATION, REPOSITORY, CACHE_ID],
                body="Empty",
                description="Needs the admin role.",
                tag="caches",
            )
        },
        "/api/v1/runs/{run_id}": {
            "get": _operation(
                "A run and the jobs of one attempt",
                "getRun",
                _ok("the run", "RunDetail"),
                errors=_READ_ERRORS,
                parameters=[
                    RUN_ID,
                    _query("attempt", {"type": "integer", "minimum": 1}, "default: the latest"),
                ],
            )
        },
        "/api/v1/runs/{run_id}/artifacts": {
            "get": _operation(
                "A run's artifacts",
                "listArtifacts",
                _ok("for each name, the artifact of the latest attempt", "Artifacts"),
                errors=_READ_ERRORS,
                parameters=[RUN_ID],
            )
        },
        "/api/v1/artifacts/{artifact_id}/zip": {
            "get": _operation(
                "Download an artifact as a zip",
                "downloadArtifact",
                {
                    "200": {
                        "description": "the artifact's files, streamed",
                        "content": {"application/zip": {"schema": {"type": "string"}}},
                    }
                },
                errors=(*_READ_ERRORS, "410"),
                parameters=[ARTIFACT_ID],
                description="410 once the artifact has expired.",
            )
        },
        "/api/v1/runs/{run_id}/cancel": {
            "post": _operation(
                "Cancel a run",
                "cancelRun",
                _ok(
                    "cancelling: queued jobs at once, running ones by their worker",
                    "RunChange",
                    "202",
                ),
                errors=_WRITE_ERRORS,
                parameters=[RUN_ID],
                body="Empty",
                description="409 when the run has already ended.",
            )
        },
        "/api/v1/runs/{run_id}/rerun": {
            "post": _operation(
                "Re-run an ended run (all jobs, or the failed ones)",
                "rerunRun",
                _ok("the run with its new attempt", "RunChange", "201"),
                errors=_WRITE_ERRORS,
                parameters=[RUN_ID],
                body="RerunRequest",
                description="409 while the run is still going, or with failed_only when "
                "nothing failed.",
            )
        },
        "/api/v1/runs/{run_id}/rerun-failed": {
            "post": _operation(
                "Re-run the failed jobs of an ended run",
                "rerunFailedJobs",
                _ok("the run with its new attempt", "RunChange", "201"),
                errors=_WRITE_ERRORS,
                parameters=[RUN_ID],
                body="Empty",
            )
        },
        "/api/v1/jobs/{job_id}": {
            "get": _operation(
                "A job and its steps",
                "getJob",
                _ok("the job", "JobDetail"),
                errors=_READ_ERRORS,
                parameters=[JOB_ID],
            )
        },
        "/api/v1/jobs/{job_id}/logs": {
            "get": _operation(
                "A page of a job's log lines",
                "getJobLogs",
                _ok("lines from `offset`", "LogPage"),
                errors=_READ_ERRORS,
                parameters=[
                    JOB_ID,
                    _query(
                        "offset",
                        {"type": "integer", "minimum": 0, "default": 0},
                        "0-based index of the first line wanted",
                    ),
                    _query(
                        "limit",
                        {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_LOG_LINES,
                            "default": DEFAULT_LOG_LINES,
                        },
                        "lines per page",
                    ),
                ],
                description="Follow a running job by asking again from `next_offset` until "
                "`complete` is true; lines are never skipped or repeated.",
            )
        },
        "/api/v1/jobs/{job_id}/logs.txt": {
            "get": _operation(
                "A job's whole log as text",
                "getJobLogText",
                {
                    "200": {
                        "description": "`timestamp text` lines; ##[group], ##[error]... markers",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
                errors=_READ_ERRORS,
                parameters=[JOB_ID],
            )
        },
        "/api/v1/jobs/{job_id}/cancel": {
            "post": _operation(
                "Cancel a job",
                "cancelJob",
                _ok("cancelling", "JobChange", "202"),
                errors=_WRITE_ERRORS,
                parameters=[JOB_ID],
                body="Empty",
            )
        },
        "/api/v1/jobs/{job_id}/approve": {
            "post": _operation(
                "Approve a job waiting at an environment",
                "approveJob",
                _ok("the approval, and the job (queued once every rule holds)", "ReviewResult"),
                errors=_WRITE_ERRORS,
                parameters=[JOB_ID],
                body="ReviewRequest",
                description="Only the environment's eligible reviewers (its reviewers, users "
                "with its reviewer role, else the repository's admins): 403 for others and for "
                "self-review when the environment prevents it; 409 when the job waits for no "
                "review or this reviewer already decided. Audited.",
                tag="environments",
            )
        },
        "/api/v1/jobs/{job_id}/reject": {
            "post": _operation(
                "Reject a job waiting at an environment",
                "rejectJob",
                _ok("the rejection, and the job (failed with the comment)", "ReviewResult"),
                errors=_WRITE_ERRORS,
                parameters=[JOB_ID],
                body="ReviewRequest",
                description="As approve; the comment is required.",
                tag="environments",
            )
        },
        "/api/v1/repos/{organisation}/{repository}/environments": {
            "get": _operation(
                "List a repository's environments",
                "listEnvironments",
                _ok("environments by name, with rules and what runs there", "EnvironmentList"),
                errors=_READ_ERRORS,
                parameters=[ORGANISATION, REPOSITORY],
                tag="environments",
            )
        },
        "/api/v1/repos/{organisation}/{repository}/environments/{name}": {
            "get": _operation(
                "An environment: rules, current deployment, lock, waiting jobs",
                "getEnvironment",
                _ok("the environment", "EnvironmentDetail"),
                errors=_READ_ERRORS,
                parameters=[ORGANISATION, REPOSITORY, ENVIRONMENT],
                tag="environments",
            )
        },
        "/api/v1/repos/{organisation}/{repository}/environments/{name}/deployments": {
            "get": _operation(
                "An environment's deployment history",
                "listDeployments",
                _ok("deployments, newest first", "DeploymentList"),
                errors=_READ_ERRORS,
                parameters=[
                    ORGANISATION,
                    REPOSITORY,
                    ENVIRONMENT,
                    _query(
                        "after",
                        {"type": "integer", "minimum": 1},
                        "the `next` of the previous page",
                    ),
                    _query(
                        "limit",
                        {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": deployments.MAX_PAGE,
                            "default": deployments.DEFAULT_PAGE,
                        },
                        "deployments per page",
                    ),
                ],
                tag="environments",
            )
        },
        "/api/v1/repos/{organisation}/{repository}/environments/{name}/rollback": {
            "post": _operation(
                "Roll an environment back to its previous successful version",
                "rollbackEnvironment",
                _ok("the rollback, queued for a job worker", "DeploymentChange", "202"),
                errors=_WRITE_ERRORS,
                parameters=[ORGANISATION, REPOSITORY, ENVIRONMENT],
                body="RollbackRequest",
                description="Needs the write role. Redeploys the latest successful deployment "
                "of another image than the current one, with its inputs; `skip_analysis` "
                "skips the analysis and the pauses. 409 when there is no such version or a "
                "rollback is already under way. Audited.",
                tag="environments",
            )
        },
        "/api/v1/deployments/{deployment_id}": {
            "get": _operation(
                "A deployment: steps with timings, traffic, approvals, outcome, log",
                "getDeployment",
                _ok("the deployment", "DeploymentDetail"),
                errors=_READ_ERRORS,
                parameters=[DEPLOYMENT_ID],
                tag="environments",
            )
        },
    }


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "cicd API",
            "version": VERSION,
            "description": "Runs, jobs, logs, dispatch, cancel and re-run; caches; "
            "environments, approvals, deployments and rollbacks. Errors are "
            '`{"error", "problems", "fields"}` with a 4xx status. Reads of public repositories '
            "need no authentication; a private repository the caller may not read answers 404.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerToken": []}, {"session": []}, {}],
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "responses": {
                f"E{status}": {
                    "description": description,
                    "content": {JSON: {"schema": _ref("Error")}},
                }
                for status, description in _ERRORS.items()
            },
            "securitySchemes": {
                "bearerToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an API token (cicd_...): scope `read` for GET, `write` "
                    "for POST and DELETE",
                },
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "sessionid",
                    "description": "the browser session; POSTs and DELETEs also need the CSRF "
                    "token",
                },
            },
        },
    }


@endpoint("GET", authenticate=False)
def openapi_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse(document())
