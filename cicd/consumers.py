"""WebSocket consumers of the project shell."""

from __future__ import annotations

import json
import uuid

from channels.generic.websocket import AsyncWebsocketConsumer


class HealthConsumer(AsyncWebsocketConsumer):
    """Answers each message by a round trip through the channel layer.

    A reply proves that the socket, daphne and the channel layer (Redis or in-memory) all work,
    which is what the live-log stream will depend on.
    """

    async def connect(self) -> None:
        self.group = f"health.{uuid.uuid4().hex}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.channel_layer.group_send(
            self.group, {"type": "health.echo", "text": (text_data or "")[:1000]}
        )

    async def health_echo(self, event: dict) -> None:
        await self.send(text_data=json.dumps({"echo": event["text"], "via": "channel-layer"}))
