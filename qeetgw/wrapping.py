"""
The shape every guard of ours takes, after L{twisted.web.guard}: an
L{IResource} that holds the resource it protects, decides in C{render} (and
in C{getChildWithDefault}, so it guards at any depth), then either answers
itself or lets the wrapped resource render.  The wrapped resource never
knows it is guarded.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource, getChildForRequest
from twisted.web.server import NOT_DONE_YET

from qeetgw.correlation import correlation_id
from qeetgw.errors import GatewayError, write_error
from qeetgw.requeststate import state_of

log = Logger()


class _RenderThrough(Resource):
    """
    A leaf that renders through its guard: what a guard's
    C{getChildWithDefault} returns, so the guard decides before anything
    below it is reached.
    """

    isLeaf = True

    def __init__(self, guard: "Wrapper") -> None:
        super().__init__()
        self._guard = guard

    def render(self, request: IRequest) -> Any:
        return self._guard.render(request)


class Wrapper(Resource):
    """
    A resource that guards C{wrapped}.  Subclasses implement C{render}, and
    call L{render_wrapped} to let the request through.
    """

    def __init__(self, wrapped: IResource) -> None:
        super().__init__()
        self.wrapped = wrapped

    def getChildWithDefault(self, path: bytes, request: IRequest) -> IResource:
        # Put the segment back and decide in render, with the whole
        # remaining path still to traverse below the wrapped resource.
        request.postpath.insert(0, request.prepath.pop())
        return _RenderThrough(self)

    def render_wrapped(self, request: IRequest) -> Any:
        """
        Let C{request} through: find the wrapped resource's child for what
        is left of the path, and render it.
        """
        return getChildForRequest(self.wrapped, request).render(request)


def render_when(
    request: IRequest, decided: "Deferred[Any]", decide: Callable[[Any], Any]
) -> Any:
    """
    Render C{request} with C{decide(result)} once C{decided} fires.

    When C{decided} has already fired (the common case: a cached token), this
    returns what C{decide} returns, with no reactor round trip; otherwise
    L{NOT_DONE_YET}, and the body C{decide} returns later is written then.
    C{decide} receives the result or the L{Failure}.
    """
    box: list = []
    decided.addBoth(box.append)
    if box:
        return decide(box[0])

    def later(_: object) -> None:
        if state_of(request).disconnected:
            return
        try:
            body = decide(box[0])
        except Exception:
            failure = Failure()
            log.failure("guard failed", failure=failure, correlation_id=correlation_id(request))
            write_error(request, GatewayError("INTERNAL_ERROR", "Internal server error"))
            return
        if body is not NOT_DONE_YET:
            request.write(body)
            request.finish()

    decided.addCallback(later)
    return NOT_DONE_YET
