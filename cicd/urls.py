from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from cicd import views
from runs import metrics
from runs.tokens import tokens_page

admin.site.site_header = "cicd administration"
admin.site.site_title = "cicd"

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("hooks/", include("webhooks.urls")),
    path("api/v1/", include("runs.api_urls")),
    path("accounts/", include("django.contrib.auth.urls")),
    path("settings/tokens/", tokens_page, name="tokens"),
    path("", include("deployments.urls")),
    # Last: the pages, whose /<organisation>/<repository>/ paths would shadow anything after.
    path("", include("runs.urls")),
]
