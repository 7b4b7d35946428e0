"""
RateLimitGuard: the resource wrapper that counts requests to /api/* per
client and refuses those over budget with 429 before they reach a service.

It sits above the JWT guard, as express-rate-limit sits before the Express
gateway's auth middleware: every /api/* request counts, refused ones too,
and every /api/* response carries the rate-limit headers.  CORS preflights
never get here (the CORS wrapper answers them above), nor do the gateway's
own endpoints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Tuple

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from qeetgw.auth import IVerifier, bearer_token
from qeetgw.clientaddr import client_ip
from qeetgw.correlation import correlation_id
from qeetgw.errors import GatewayError, render_error
from qeetgw.fields import KnownNames
from qeetgw.ratelimit.store import Algorithm, Budget, Count, IRateLimitStore, StoreUnavailable
from qeetgw.ratelimit.windows import (
    Decision,
    HeaderStyle,
    decide_fixed,
    decide_sliding,
    rate_limit_headers,
)
from qeetgw.requeststate import target_of
from qeetgw.wrapping import Wrapper, render_when

if TYPE_CHECKING:
    from qeetgw.metrics import Metrics

log = Logger()

#: The names of the rate-limit headers and Retry-After, encoded once
#: (L{qeetgw.fields}).
_NAMES = KnownNames(
    [
        b"RateLimit-Policy",
        b"RateLimit",
        b"RateLimit-Limit",
        b"RateLimit-Remaining",
        b"RateLimit-Reset",
        b"retry-after",
    ]
)


class RateLimiter:
    """
    Decides whether a request is within its client's budget.

    @param store: where the counters live.
    @param default: the budget of every path without one of its own.
    @param routes: (path prefix, budget) pairs; the longest prefix that
        matches on a segment boundary wins, and its budget replaces the
        default (its counters are its own).
    @param algorithm: C{"fixed"} or C{"sliding"}.
    @param key_mode: C{"ip"}, C{"user"} or C{"ip+user"}.
    @param verifier: the token verifier, for the C{user} modes (its cache
        makes this a dictionary look-up for a token the JWT guard has seen).
    """

    def __init__(
        self,
        store: IRateLimitStore,
        default: Budget,
        routes: Sequence[Tuple[str, Budget]],
        algorithm: Algorithm,
        key_mode: str,
        verifier: Optional[IVerifier] = None,
    ) -> None:
        self.store = store
        self._default = default
        # Longest first, so the first match is the most specific.
        self._routes = sorted(
            ((prefix.encode("ascii"), budget) for prefix, budget in routes),
            key=lambda route: -len(route[0]),
        )
        self._algorithm = algorithm
        self._decide: Callable[[Count, Budget], Decision] = (
            decide_fixed if algorithm == "fixed" else decide_sliding
        )
        self._key_mode = key_mode
        self._verifier = verifier

    @property
    def budgets(self) -> Tuple[Budget, ...]:
        """
        Every budget a request can be counted under: the default, then the
        routes' (longest prefix first).
        """
        return (self._default,) + tuple(budget for _, budget in self._routes)

    def budget_for(self, path: bytes) -> Budget:
        """
        The budget of the raw request C{path}.
        """
        for prefix, budget in self._routes:
            if path == prefix or path.startswith(prefix + b"/"):
                return budget
        return self._default

    def key_for(self, request: IRequest) -> "Deferred[str]":
        """
        The client key of C{request}, by RATE_LIMIT_KEY: its address, the
        subject of its valid token (the address when it has none), or both.
        """
        address = "ip:" + (client_ip(request) or "unknown")
        if self._key_mode == "ip" or self._verifier is None:
            return succeed(address)
        token = bearer_token(request)
        if token is None:
            return succeed(address)

        def with_subject(identity: Any) -> str:
            subject = getattr(identity, "subject", None)
            if subject is None:
                return address
            user = "user:" + subject
            return user if self._key_mode == "user" else address + "|" + user

        # An invalid token is counted against the address; the JWT guard
        # will refuse it.
        return self._verifier.verify(token).addCallbacks(with_subject, lambda _: address)

    def check(self, request: IRequest) -> "Deferred[Decision]":
        """
        Count C{request} and decide; fails with L{StoreUnavailable} when the
        store cannot count.
        """
        budget = self.budget_for(target_of(request).path)
        return self.key_for(request).addCallback(
            lambda key: self.store.hit(key, budget, self._algorithm)
        ).addCallback(self._decide, budget)


class RateLimitGuard(Wrapper):
    """
    Lets a request through while its client is within budget; otherwise
    answers 429 with Retry-After.

    @param message: RATE_LIMIT_MESSAGE, the 429's message.
    @param header_style: RATE_LIMIT_HEADERS.
    @param fail_open: RATE_LIMIT_FAIL=open: when the store cannot count,
        let requests through (the store logs the outage once); else 503.
    @param metrics: where 429s (by budget) and store errors are counted;
        L{None} counts nothing.
    """

    def __init__(
        self,
        wrapped: IResource,
        limiter: RateLimiter,
        message: str,
        header_style: HeaderStyle,
        fail_open: bool,
        metrics: "Optional[Metrics]" = None,
    ) -> None:
        super().__init__(wrapped)
        self._metrics = metrics
        self._limiter = limiter
        self._message = message
        self._header_style = header_style
        self._fail_open = fail_open

    def render(self, request: IRequest) -> Any:
        """
        Count the request, then let it through or refuse it.
        """
        return render_when(request, self._limiter.check(request), lambda result: self._decided(request, result))

    def _decided(self, request: IRequest, result: Any) -> Any:
        if isinstance(result, Failure):
            if self._metrics is not None:
                self._metrics.ratelimit_store_errors.inc()
            if not result.check(StoreUnavailable):
                log.failure("rate limiting failed", failure=result, correlation_id=correlation_id(request))
            if self._fail_open:
                return self.render_wrapped(request)
            _NAMES.set(request.responseHeaders, ((b"retry-after", b"1"),))
            return render_error(
                request,
                GatewayError("SERVICE_UNAVAILABLE", "Rate limiting is unavailable", status=503),
            )
        decision: Decision = result
        headers = request.responseHeaders
        _NAMES.set(headers, rate_limit_headers(decision, self._header_style))
        if decision.allowed:
            return self.render_wrapped(request)
        if self._metrics is not None:
            self._metrics.rate_limited_by(decision.budget.name)
        _NAMES.set(headers, ((b"retry-after", b"%d" % (decision.retry_after_s,)),))
        return render_error(request, GatewayError("TOO_MANY_REQUESTS", self._message))
