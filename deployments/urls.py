"""The environment pages, under a repository's path, and the review form of a waiting job
(the approvals page itself is `approvals/` in `runs.urls`, with the other single-segment pages).
Included before `runs.urls`; no path here matches one of its pages."""

from __future__ import annotations

from django.urls import path

from deployments import views

REPOSITORY = "<slug:organisation>/<slug:repository>/"
ENVIRONMENT = REPOSITORY + "environments/<str:name>/"
JOB = REPOSITORY + "runs/<int:number>/jobs/<int:job_id>/"

urlpatterns = [
    path(REPOSITORY + "environments/", views.environment_list, name="environments"),
    path(ENVIRONMENT, views.environment_detail, name="environment"),
    path(ENVIRONMENT + "status.json", views.environment_status, name="environment-status"),
    path(ENVIRONMENT + "rollback/", views.environment_rollback, name="environment-rollback"),
    path(JOB + "review/", views.job_review, name="job-review"),
]
