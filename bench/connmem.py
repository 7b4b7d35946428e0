"""
What open connections cost a gateway process in memory: a `twistd qeetgw`
on loopback, then COUNT idle keep-alive client connections held open (each
after one request), then, once those are closed, COUNT idle WebSocket
tunnels (through the gateway to bench/wsecho.py); the gateway's resident
memory read from /proc at each step.  It is what deploy/kubernetes sizes
the pod's memory limit by: connections, not requests, decide it.

    .venv/bin/python bench/connmem.py [COUNT]     # default 2000

Prints one JSON object.  Needs COUNT * 3 file descriptors in all (raise
`ulimit -n` for large counts); starts and stops its own processes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

BENCH = Path(__file__).resolve().parent
PROJECT = BENCH.parent
TWISTD = Path(sys.executable).parent / "twistd"
BATCH = 100


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def wait_listening(port: int, within: float = 20.0) -> None:
    until = time.monotonic() + within
    while time.monotonic() < until:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


async def read_head(reader: asyncio.StreamReader) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await reader.read(65536)
        if not chunk:
            raise RuntimeError(f"closed before a head: {head[:80]!r}")
        head += chunk
    return head


async def keep_alive(port: int) -> Tuple[Any, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n")
    head = await read_head(reader)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"not a 200: {head[:80]!r}")
    return reader, writer


async def tunnel(port: int) -> Tuple[Any, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            "GET /api/v1/products/ws HTTP/1.1\r\nHost: bench\r\nConnection: Upgrade\r\n"
            f"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
        ).encode()
    )
    head = await read_head(reader)
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"not a 101: {head[:80]!r}")
    return reader, writer


async def hold(count: int, open_one: Any, port: int) -> List[Tuple[Any, Any]]:
    held: List[Tuple[Any, Any]] = []
    while len(held) < count:
        held += await asyncio.gather(*[open_one(port) for _ in range(min(BATCH, count - len(held)))])
    await asyncio.sleep(1.0)  # let the gateway settle what it allocated
    return held


async def close(held: List[Tuple[Any, Any]]) -> None:
    for _, writer in held:
        writer.close()
    await asyncio.sleep(2.0)


async def measure(port: int, pid: int, count: int) -> Dict[str, Any]:
    start = rss_mib(pid)
    held = await hold(count, keep_alive, port)
    with_connections = rss_mib(pid)
    await close(held)
    after = rss_mib(pid)
    held = await hold(count, tunnel, port)
    with_tunnels = rss_mib(pid)
    await close(held)
    return {
        "count": count,
        "rss_mib_at_start": round(start, 1),
        "rss_mib_with_connections": round(with_connections, 1),
        "kib_per_connection": round((with_connections - start) * 1024 / count, 1),
        "rss_mib_after_closing_them": round(after, 1),
        "rss_mib_with_tunnels": round(with_tunnels, 1),
        "kib_per_tunnel": round((with_tunnels - after) * 1024 / count, 1),
    }


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    echo_port, gateway_port = free_port(), free_port()
    env = dict(
        os.environ,
        REQUIRE_AUTH="false",
        HOST="127.0.0.1",
        PORT=str(gateway_port),
        LOG_LEVEL="warn",
        PRODUCT_SERVICE_URL=f"http://127.0.0.1:{echo_port}",
        HEALTH_CHECK_INTERVAL_MS="0",
        RATE_LIMIT_MAX="100000000",
        MAX_CONNECTIONS=str(max(10000, count + 100)),
        WEBSOCKET_MAX_TUNNELS=str(max(10000, count + 100)),
    )
    processes = [
        subprocess.Popen([sys.executable, str(BENCH / "wsecho.py"), str(echo_port), "products"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([str(TWISTD), "--nodaemon", "--pidfile=", "qeetgw"], env=env,
                         cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]
    try:
        wait_listening(echo_port)
        wait_listening(gateway_port)
        print(json.dumps(asyncio.run(measure(gateway_port, processes[1].pid, count))))
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    main()
