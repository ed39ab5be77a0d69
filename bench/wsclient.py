"""A small asyncio WebSocket client (RFC 6455): what the benchmarks' viewers speak.

Enough for the live endpoint: the opening handshake, masked text frames out, text frames in
(fragmented or not), ping answered, close. No extension is offered, so frames arrive as the
server wrote them. Written here rather than taken from a package because the viewers must cost
the machine as little as possible: many of them share the cores with the server they measure.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import struct
from typing import Any
from urllib.parse import urlsplit

TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0


class Closed(Exception):
    pass


class WebSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.received_bytes = 0

    @classmethod
    async def connect(cls, base_url: str, path: str) -> WebSocket:
        parts = urlsplit(base_url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port, limit=2**22)
        key = base64.b64encode(os.urandom(16)).decode()
        host = f"{parts.hostname}:{parts.port}"
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nOrigin: {parts.scheme}://{host}\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            writer.close()
            raise Closed(f"the server refused the WebSocket: {status.decode(errors='replace')}")
        return cls(reader, writer)

    async def send_json(self, message: Any) -> None:
        await self._send(TEXT, json.dumps(message).encode())

    async def receive_text(self) -> str:
        """The next text message (fragments joined); pings are answered on the way."""
        pieces: list[bytes] = []
        while True:
            opcode, final, payload = await self._frame()
            if opcode == PING:
                await self._send(PONG, payload)
                continue
            if opcode == PONG:
                continue
            if opcode == CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                reason = payload[2:].decode(errors="replace")
                raise Closed(f"the server closed the WebSocket (code {code}) {reason}".strip())
            pieces.append(payload)
            if final:
                return b"".join(pieces).decode()

    async def close(self) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self._send(CLOSE, struct.pack("!H", 1000))
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()

    async def _frame(self) -> tuple[int, bool, bytes]:
        head = await self.reader.readexactly(2)
        final, opcode = bool(head[0] & 0x80), head[0] & 0x0F
        length = head[1] & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        if head[1] & 0x80:  # servers do not mask, but a mask would be legal to read
            mask = await self.reader.readexactly(4)
            payload = _unmask(await self.reader.readexactly(length), mask)
        else:
            payload = await self.reader.readexactly(length)
        self.received_bytes += len(payload)
        return opcode, final, payload

    async def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 2**16:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        self.writer.write(head + mask + _unmask(payload, mask))
        await self.writer.drain()


def _unmask(data: bytes, mask: bytes) -> bytes:
    # XOR with the 4-byte key repeated, done on one big integer instead of byte by byte.
    repeated = (mask * (len(data) // 4 + 1))[: len(data)]
    value = int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")
    return value.to_bytes(len(data), "big")
