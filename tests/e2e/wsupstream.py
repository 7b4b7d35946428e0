"""
The tests' WebSocket upstream protocol (Twisted's server, on wsproto), and
that upstream in a process of its own: run as C{python -m
tests.e2e.wsupstream}, it prints its port, then serves until killed.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Optional

from twisted.internet import reactor
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.websocket import WebSocketResource, WebSocketTransport


class EchoServer:
    """
    A WebSocket server protocol: echoes text as C{"echo:" + text} and bytes
    as they are; the text C{"big N"} is answered with one binary message of
    N bytes, and C{"bye"} closes with 1000.  C{lost} is called with the
    reason when the connection ends.
    """

    def __init__(self, lost: Callable[[Failure], Any] = lambda reason: None) -> None:
        self.transport: Optional[WebSocketTransport] = None
        self._lost = lost

    def negotiationStarted(self, transport: WebSocketTransport) -> None:
        self.transport = transport

    def negotiationFinished(self) -> None:
        pass

    def textMessageReceived(self, message: str) -> None:
        assert self.transport is not None
        if message == "bye":
            self.transport.loseConnection(1000)
        elif message.startswith("big "):
            self.transport.sendBytesMessage(b"x" * int(message[4:]))
        else:
            self.transport.sendTextMessage("echo:" + message)

    def bytesMessageReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.sendBytesMessage(bytes(data))

    def pongReceived(self, payload: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        self._lost(reason)


class Factory:
    def buildProtocol(self, request: Any) -> EchoServer:
        return EchoServer()


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
