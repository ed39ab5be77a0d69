from __future__ import annotations

from django.urls import path

from webhooks import views

urlpatterns = [
    path("<str:source>/<str:organisation>/<str:repository>", views.receive, name="webhook"),
]
