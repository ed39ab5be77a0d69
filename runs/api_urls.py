"""The JSON API, under /api/v1/ (described by /api/v1/openapi.json)."""

from __future__ import annotations

from django.urls import path, re_path

from deployments import api as deployments
from runs import openapi
from runs.api import caches, usage, views

urlpatterns = [
    path("openapi.json", openapi.openapi_json, name="api-openapi"),
    path("user", views.current_user, name="api-user"),
    path("runs", views.runs, name="api-runs"),
    path("runs/<int:run_id>", views.run_detail, name="api-run"),
    path("runs/<int:run_id>/artifacts", views.run_artifacts, name="api-run-artifacts"),
    path("runs/<int:run_id>/cancel", views.cancel_run, name="api-run-cancel"),
    path("runs/<int:run_id>/rerun", views.rerun, name="api-run-rerun"),
    path("runs/<int:run_id>/rerun-failed", views.rerun_failed, name="api-run-rerun-failed"),
    path("artifacts/<int:artifact_id>/zip", views.artifact_zip, name="api-artifact-zip"),
    path("jobs/<int:job_id>", views.job_detail, name="api-job"),
    path("jobs/<int:job_id>/logs", views.job_logs, name="api-job-logs"),
    path("jobs/<int:job_id>/logs.txt", views.job_logs_text, name="api-job-logs-text"),
    path("jobs/<int:job_id>/cancel", views.cancel_job, name="api-job-cancel"),
    path("jobs/<int:job_id>/approve", deployments.approve_job, name="api-job-approve"),
    path("jobs/<int:job_id>/reject", deployments.reject_job, name="api-job-reject"),
    path(
        "repos/<str:organisation>/<str:repository>/runs",
        views.repository_runs,
        name="api-repository-runs",
    ),
    path(
        "repos/<str:organisation>/<str:repository>/dispatches",
        views.dispatches,
        name="api-dispatches",
    ),
    path(
        "repos/<str:organisation>/<str:repository>/caches",
        caches.repository_caches,
        name="api-repository-caches",
    ),
    path(
        "repos/<str:organisation>/<str:repository>/caches/<int:cache_id>",
        caches.delete_cache,
        name="api-repository-cache",
    ),
    path(
        "repos/<str:organisation>/<str:repository>/environments",
        deployments.environments,
        name="api-environments",
    ),
    path(
        "repos/<str:organisation>/<str:repository>/environments/<str:name>",
        deployments.environment_detail,
        name="api-environment",
    ),
    path(
        "repos/<str:organisation>/<str:repository>/environments/<str:name>/deployments",
        deployments.environment_deployments,
        name="api-environment-deployments",
    ),
    path(
        "repos/<str:organisation>/<str:repository>/environments/<str:name>/rollback",
        deployments.rollback,
        name="api-environment-rollback",
    ),
    path("deployments/<int:deployment_id>", deployments.deployment_detail, name="api-deployment"),
    path("usage", usage.all_usage, name="api-usage"),
    path(
        "repos/<str:organisation>/<str:repository>/usage",
        usage.repository_usage,
        name="api-repository-usage",
    ),
    # Last: any other path under /api/v1/ answers a JSON 404, not the HTML page.
    re_path(r"^(?P<path>.*)$", views.unknown_endpoint, name="api-unknown"),
]
