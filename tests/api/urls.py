"""The project's URLs plus the token page where the project mounts it (/settings/tokens/)."""

from __future__ import annotations

from django.urls import include, path

from runs.tokens import tokens_page

urlpatterns = [
    path("settings/tokens/", tokens_page, name="test-tokens"),
    path("", include("cicd.urls")),
]
