"""
The bench's WebSocket load: CONNECTIONS WebSockets to URL_PATH on
127.0.0.1:PORT, each sending a text message of SIZE bytes and waiting for its
echo, again and again, for SECONDS; prints one JSON object: messages echoed,
seconds, bytes each way on the wire, and errors.

    python bench/wsload.py PORT PATH CONNECTIONS SIZE SECONDS [AUTHORIZATION]

Frames are built and read here (masked toward the server, RFC 6455 5.3), so
the client costs the same whatever it talks to.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import sys
import time
from typing import Dict, Optional


def _frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x81, 0x80 | length)
    else:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, length)
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return header + mask + masked


async def _one(port: int, path: str, size: int, until: float, auth: Optional[str], totals: Dict[str, int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    head = (
        f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
        + (f"Authorization: {auth}\r\n" if auth else "")
        + "\r\n"
    )
    writer.write(head.encode())
    response = await reader.readuntil(b"\r\n\r\n")
    if not response.startswith(b"HTTP/1.1 101"):
        totals["errors"] += 1
        writer.close()
        return
    frame = _frame(b"m" * size)
    while time.monotonic() < until:
        writer.write(frame)
        first = await reader.readexactly(2)
        length = first[1] & 0x7F
        extra = 0
        if length == 126:
            extra = 2
            length = struct.unpack("!H", await reader.readexactly(2))[0]
        await reader.readexactly(length)
        totals["messages"] += 1
        totals["to_server"] += len(frame)
        totals["to_client"] += 2 + extra + length
    writer.close()


async def _main(port: int, path: str, connections: int, size: int, seconds: float, auth: Optional[str]) -> None:
    totals = {"messages": 0, "to_server": 0, "to_client": 0, "errors": 0}
    started = time.monotonic()
    until = started + seconds
    await asyncio.gather(*(_one(port, path, size, until, auth, totals) for _ in range(connections)))
    totals_out = dict(totals, seconds=time.monotonic() - started)
    print(json.dumps(totals_out))


if __name__ == "__main__":
    port, path, connections, size, seconds = sys.argv[1:6]
    auth = sys.argv[6] if len(sys.argv) > 6 else None
    asyncio.run(_main(int(port), path, int(connections), int(size), float(seconds), auth))
