"""
Upstream resources for end-to-end tests, served on real loopback sockets.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from typing import Any, List

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPullProducer
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

GZIPPED = gzip.compress(b'{"items":[' + b'"x",' * 200 + b'"y"]}')


class ScriptedUpstream(Resource):
    """
    Answers by the last path segment: ``echo`` describes the request,
    ``redirect``, ``gzip``, ``cookie``, ``hop``, ``slow`` (never answers),
    ``die`` (promises 1000 bytes, sends 10 and closes).
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: List[dict] = []
        self.held: List[IRequest] = []
        self._held_waiters: List[Deferred] = []

    def wait_held(self) -> Deferred:
        """
        Fire when a ``slow`` request arrives and is held.
        """
        waiter: Deferred = Deferred()
        self._held_waiters.append(waiter)
        return waiter

    def render(self, request: IRequest) -> Any:
        body = request.content.read()
        described = {
            "method": request.method.decode(),
            "uri": request.uri.decode("latin-1"),
            "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "headers": {
                name.decode().lower(): [value.decode("latin-1") for value in values]
                for name, values in request.requestHeaders.getAllRawHeaders()
            },
        }
        self.seen.append(described)
        action = request.path.rsplit(b"/", 1)[-1]
        if action == b"redirect":
            request.setResponseCode(302)
            request.setHeader(b"location", b"/somewhere/else")
            return b""
        if action == b"gzip":
            request.setHeader(b"content-encoding", b"gzip")
            request.setHeader(b"content-type", b"application/json")
            return GZIPPED
        if action == b"cookie":
            request.responseHeaders.setRawHeaders(
                b"set-cookie", [b"session=" + request.args.get(b"user", [b"?"])[0] + b"; Path=/", b"seen=1"]
            )
        if action == b"hop":
            request.setHeader(b"keep-alive", b"timeout=3")
            request.setHeader(b"upgrade", b"websocket")
            request.setHeader(b"x-powered-by", b"Express")
        if action == b"slow":
            self.held.append(request)
            waiters, self._held_waiters = self._held_waiters, []
            for waiter in waiters:
                waiter.callback(request)
            return NOT_DONE_YET
        if action == b"die":
            request.setHeader(b"content-length", b"1000")
            request.write(b"0123456789")
            reactor.callLater(0.05, request.channel.transport.abortConnection)
            return NOT_DONE_YET
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(described).encode()


@implementer(IPullProducer)
class _Blob:
    """
    Writes C{total} bytes in 64 KiB pieces as fast as the connection takes
    them, and counts them.
    """

    def __init__(self, request: IRequest, total: int) -> None:
        self._request = request
        self._left = total
        self._piece = b"\xab" * 65536

    def resumeProducing(self) -> None:
        if self._left <= 0:
            self._request.unregisterProducer()
            self._request.finish()
            return
        piece = self._piece[: self._left]
        self._left -= len(piece)
        self._request.write(piece)

    def stopProducing(self) -> None:
        self._left = 0


class BlobUpstream(Resource):
    """
    Answers every request with C{total} bytes, produced as they are read.
    """

    isLeaf = True

    def __init__(self, total: int) -> None:
        super().__init__()
        self._total = total

    def render(self, request: IRequest) -> Any:
        request.setHeader(b"content-type", b"application/octet-stream")
        request.setHeader(b"content-length", b"%d" % (self._total,))
        request.registerProducer(_Blob(request, self._total), False)
        return NOT_DONE_YET
