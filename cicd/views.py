"""Pages of the project shell: the home page and the health endpoint."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from cicd import health
from runs.views import repositories_with_latest_run


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """The repositories the visitor may read (public ones for anonymous visitors), each with its
    latest run, and whether the server's parts answer."""
    return render(
        request,
        "home.html",
        {"health": health.check(), "repositories": repositories_with_latest_run(request.user)},
    )


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    status = health.check()
    return JsonResponse(status.as_dict(), status=200 if status.ok else 503)
