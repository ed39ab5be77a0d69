"""The web pages (server-rendered). Mounted last at the site root: the single-segment pages
(`runs/`, `approvals/`) come before the `<organisation>/<repository>/` ones."""

from __future__ import annotations

from django.urls import path

from cicd import views as shell
from deployments import views as deployment_views
from runs import views

REPOSITORY = "<slug:organisation>/<slug:repository>/"
RUN = REPOSITORY + "runs/<int:number>/"
JOB = RUN + "jobs/<int:job_id>/"

urlpatterns = [
    path("", shell.home, name="home"),
    path("runs/", views.all_runs, name="runs"),
    path("runs/states.json", views.run_states, name="run-states"),
    path("approvals/", deployment_views.approvals, name="approvals"),
    path(REPOSITORY, views.repository_runs, name="repository"),
    path(REPOSITORY + "badge.svg", views.badge, name="badge"),
    path(REPOSITORY + "dispatch/", views.dispatch_run, name="dispatch"),
    path(RUN, views.run_detail, name="run"),
    path(RUN + "cancel/", views.run_cancel, name="run-cancel"),
    path(RUN + "rerun/", views.run_rerun, name="run-rerun"),
    path(RUN + "rerun-failed/", views.run_rerun_failed, name="run-rerun-failed"),
    path(RUN + "artifacts/<str:name>.zip", views.run_artifact, name="run-artifact"),
    path(JOB, views.job_detail, name="job"),
    path(JOB + "log.txt", views.job_log, name="job-log"),
]
