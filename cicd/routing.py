"""WebSocket routes. Live run and log streams join here (SPEC 7)."""

from __future__ import annotations

from django.urls import path

from cicd.consumers import HealthConsumer
from runs.consumers import LiveConsumer

websocket_urlpatterns = [
    path("ws/health/", HealthConsumer.as_asgi()),
    path("ws/live/", LiveConsumer.as_asgi()),
]
