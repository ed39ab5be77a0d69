"""Home page, /healthz, the worker ping, and a WebSocket round trip through the channel layer."""

from __future__ import annotations

import pytest
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from cicd import health
from cicd.asgi import application
from cicd.tasks import ping

from .conftest import redis_url_with_db


@pytest.mark.django_db
def test_healthz_reports_database_and_last_worker_ping(client):
    health.cache.delete(health.WORKER_PING_KEY)
    before = client.get("/healthz").json()
    assert before["ok"] is True
    assert before["database"] == "ok"
    assert before["worker_last_ping_seconds_ago"] is None

    ping("nonce-123")  # what the worker runs when the message arrives

    after = client.get("/healthz").json()
    assert after["worker_last_ping_nonce"] == "nonce-123"
    assert 0 <= after["worker_last_ping_seconds_ago"] < 60


@pytest.mark.django_db
def test_home_page_says_running_and_links_the_login(client):
    response = client.get("/")
    assert response.status_code == 200
    body = response.content.decode()
    assert "cicd is running" in body
    assert "/accounts/login/" in body


@pytest.mark.django_db
def test_healthz_only_answers_get(client):
    assert client.post("/healthz").status_code == 405


LAYERS = {
    "memory": {"BACKEND": "channels.layers.InMemoryChannelLayer"},
    "redis": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [redis_url_with_db(2)]},
    },
}


@pytest.mark.parametrize("layer", sorted(LAYERS))
async def test_websocket_round_trip_through_the_channel_layer(layer):
    with override_settings(CHANNEL_LAYERS={"default": LAYERS[layer]}):
        channel_layers.backends.clear()
        communicator = WebsocketCommunicator(
            application, "/ws/health/", headers=[(b"origin", b"http://localhost")]
        )
        connected, _ = await communicator.connect()
        assert connected
        await communicator.send_to(text_data="hello")
        reply = await communicator.receive_json_from(timeout=5)
        assert reply == {"echo": "hello", "via": "channel-layer"}
        await communicator.disconnect()
    channel_layers.backends.clear()


async def test_websocket_from_a_foreign_origin_is_refused():
    communicator = WebsocketCommunicator(
        application, "/ws/health/", headers=[(b"origin", b"http://evil.example")]
    )
    connected, _ = await communicator.connect()
    assert not connected
