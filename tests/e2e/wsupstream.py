"""
A WebSocket upstream in a process of its own (Twisted's server, on
wsproto): echoes text, and answers the text C{"big N"} with one binary
message of N bytes.  Run as C{python -m tests.e2e.wsupstream}; it prints
its port, then serves until killed.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

from twisted.internet import reactor
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.websocket import WebSocketResource, WebSocketTransport


class Server:
    def __init__(self) -> None:
        self.transport: Optional[WebSocketTransport] = None

    def negotiationStarted(self, transport: WebSocketTransport) -> None:
        self.transport = transport

    def negotiationFinished(self) -> None:
        pass

    def textMessageReceived(self, message: str) -> None:
        assert self.transport is not None
        if message.startswith("big "):
            self.transport.sendBytesMessage(b"x" * int(message[4:]))
        else:
            self.transport.sendTextMessage("echo:" + message)

    def bytesMessageReceived(self, data: bytes) -> None:
        pass

    def pongReceived(self, payload: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        pass


class Factory:
    def buildProtocol(self, request: Any) -> Server:
        return Server()


def main() -> None:
    root = Resource()
    users = Resource()
    root.putChild(b"users", users)
    users.putChild(b"ws", WebSocketResource(Factory()))
    port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
    print(port.getHost().port, flush=True)
    reactor.run()


if __name__ == "__main__":
    sys.exit(main())
