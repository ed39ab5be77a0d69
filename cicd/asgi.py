"""ASGI entry point: HTTP through Django, WebSockets through Channels routing."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cicd.settings")
# Under ASGI each request runs its sync view in a thread of its own, so a connection kept open
# for reuse is never reused: it lingers until its thread is collected, and a burst of webhooks
# then runs PostgreSQL out of connections (seen: 500s). The web process closes them instead,
# into a pool on PostgreSQL: opening a connection per request or per live-log read was the
# largest cost of the live-log benchmark (30 % of the web process's time).
os.environ.setdefault("CICD_DB_CONN_MAX_AGE", "0")
os.environ.setdefault("CICD_DB_POOL_SIZE", "16")

# Django must be set up before anything imports models (consumers do).
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from cicd.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
