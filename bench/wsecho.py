"""
The bench's WebSocket upstream: Twisted's own WebSocket server (on wsproto),
echoing every message.  bench/run.py starts it and nginx proxies
/products/ws to it, so the tunnel scenario's upstream sits behind the same
nginx as every other scenario's.

    python bench/wsecho.py PORT [PREFIX]

PREFIX (default none) puts the WebSocket under it: C{products} serves
C{/products/ws}, where a gateway forwards C{/api/v1/products/ws}
(bench/connmem.py).
"""

from __future__ import annotations

import sys
from typing import Any, Optional

from twisted.internet import reactor
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.websocket import WebSocketResource, WebSocketTransport


class Echo:
    def __init__(self) -> None:
        self.transport: Optional[WebSocketTransport] = None

    def negotiationStarted(self, transport: WebSocketTransport) -> None:
        self.transport = transport

    def negotiationFinished(self) -> None:
        pass

    def textMessageReceived(self, message: str) -> None:
        assert self.transport is not None
        self.transport.sendTextMessage(message)

    def bytesMessageReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.sendBytesMessage(bytes(data))

    def pongReceived(self, payload: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        pass


class Factory:
    def buildProtocol(self, request: Any) -> Echo:
        return Echo()


def main() -> None:
    root = parent = Resource()
    if len(sys.argv) > 2:
        parent = Resource()
        root.putChild(sys.argv[2].encode("ascii"), parent)
    parent.putChild(b"ws", WebSocketResource(Factory()))
    reactor.listenTCP(int(sys.argv[1]), Site(root), interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main()
