"""
The gateway's own endpoints: C{/health}, C{/health/services} and C{/info}.

A small Klein app.  Everything it answers is JSON, errors included: an
unknown path is a 404 envelope, a known path with another method a 405
envelope with C{Allow}, a fault a 500 envelope; never Klein's or werkzeug's
HTML.  Its resource is mounted at the site's root, for every path outside
C{/api/}.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from qeetgw.config import Config
from qeetgw.correlation import correlation_id
from qeetgw.errors import JSON_CONTENT_TYPE, GatewayError, dumps, not_found, render_error
from qeetgw.ratelimit.store import StoreState
from qeetgw.readiness import Readiness
from qeetgw.upstream.health import HealthReport, IHealthSource, iso_timestamp

_log = Logger()


def _method(request: IRequest) -> str:
    """
    The request's method, for messages.
    """
    return request.method.decode("latin-1")


def _raw_path(request: IRequest) -> str:
    """
    The path as the client sent it (percent-encoding kept, no query), for
    messages.
    """
    return request.path.decode("latin-1")


def _json(request: IRequest, value: Any, status: int = 200) -> bytes:
    """
    Set C{request}'s status and headers for a JSON body and return the body.
    """
    body = dumps(value)
    request.setResponseCode(status)
    request.setHeader(b"content-type", JSON_CONTENT_TYPE)
    request.setHeader(b"content-length", b"%d" % (len(body),))
    # Choosing the id sets the X-Correlation-ID response header.
    correlation_id(request)
    return body


def _not_found(request: IRequest) -> bytes:
    """
    The 404 envelope for a path this app does not serve.
    """
    return render_error(request, not_found(request))


class _PlainPathsOnly(Resource):
    """
    Answers 404 itself for a request Klein would route wrongly or answer in
    HTML, and hands every other to Klein.

    Klein routes on the path rebuilt from Twisted's already-unquoted
    segments, so C{/health%2Fservices} would reach C{/health/services} and
    C{//health} would reach C{/health}; it answers a non-UTF-8 segment or
    Host with an HTML 400.  None of our paths has an escape or an empty
    segment, so a path with either is simply not one of ours.
    """

    isLeaf = True

    def __init__(self, klein_resource: IResource) -> None:
        super().__init__()
        self._klein = klein_resource

    def render(self, request: IRequest) -> Any:
        """
        Answer 404 or 400 for what Klein must not see; let Klein render the
        rest.
        """
        path = request.path
        if not path.startswith(b"/") or b"%" in path or b"//" in path:
            return _not_found(request)
        try:
            request.getRequestHostname().decode("utf-8")
        except UnicodeDecodeError:
            return render_error(
                request, GatewayError("BAD_REQUEST", "Invalid Host header")
            )
        return self._klein.render(request)


class GatewayApp:
    """
    The Klein app serving the gateway's own endpoints.

    @ivar app: the routes, shared by every instance (Klein binds them to the
        instance whose L{resource} is asked for).
    """

    app = Klein()

    def __init__(
        self,
        config: Config,
        health: IHealthSource,
        clock: IReactorTime,
        version: str,
        rate_limit_state: Optional[Callable[[], StoreState]] = None,
        readiness: Optional[Readiness] = None,
    ) -> None:
        """
        @param config: the configuration; C{/info} lists its services.
        @param health: reports the upstreams' health for
            C{/health/services}: from the background checks
            (L{qeetgw.upstream.activehealth.ActiveHealthChecker}), or by probing
            on demand (L{qeetgw.upstream.health.HealthChecker}).
        @param clock: the source of every C{timestamp}.
        @param version: the gateway's version, for C{/info}.
        @param rate_limit_state: the rate-limit store's state, reported by
            C{/health/services} (a store that cannot count degrades it).
        @param readiness: whether the gateway is draining, for C{/ready}.
        """
        self._config = config
        self._health = health
        self._clock = clock
        self._version = version
        self._rate_limit_state = rate_limit_state
        self._readiness = readiness if readiness is not None else Readiness()

    def resource(self) -> IResource:
        """
        The resource serving this app, to mount at the site's root.
        """
        return _PlainPathsOnly(self.app.resource())

    def _now(self) -> str:
        """
        The clock's time, as every C{timestamp} is written.
        """
        return iso_timestamp(self._clock.seconds())

    # GET includes HEAD (werkzeug adds it; Twisted drops a HEAD's body).
    # merge_slashes=False: werkzeug would answer a // with a 308 redirect.
    @app.route("/health", methods=["GET"], merge_slashes=False)
    def gateway_health(self, request: IRequest) -> bytes:
        """
        Liveness and readiness: the gateway is up.  Probes nothing.
        """
        return _json(
            request,
            {"status": "ok", "service": "api-gateway", "timestamp": self._now()},
        )

    @app.route("/ready", methods=["GET"], merge_slashes=False)
    def ready(self, request: IRequest) -> bytes:
        """
        Readiness: 200 while serving, 503 from the moment a drain starts.
        """
        if self._readiness.ready:
            return _json(request, {"status": "ready", "timestamp": self._now()})
        return _json(request, {"status": "draining", "timestamp": self._now()}, 503)

    @app.route("/health/services", methods=["GET"], merge_slashes=False)
    def services_health(self, request: IRequest) -> "Deferred[bytes]":
        """
        Report every upstream and its instances, and the rate-limit store:
        200 when all are healthy, else 503.  With background checks on the
        report is ready at once; with them off, every instance is probed.
        """

        def respond(report: HealthReport) -> bytes:
            body = report.to_json()
            healthy = report.healthy
            if self._rate_limit_state is not None:
                state = self._rate_limit_state()
                body["rateLimit"] = {
                    "store": state.store,
                    "status": "healthy" if state.healthy else "unhealthy",
                    "detail": state.detail,
                }
                if not state.healthy:
                    healthy = False
                    body["status"] = "degraded"
            return _json(request, body, 200 if healthy else 503)

        return self._health.check_all().addCallback(respond)

    @app.route("/info", methods=["GET"], merge_slashes=False)
    def info(self, request: IRequest) -> bytes:
        """
        The gateway's name, version and upstreams.
        """
        services = [
            {"name": service.name, "baseUrl": service.url}
            for service in self._config.services
        ]
        return _json(
            request,
            {
                "name": "Qeetmart API Gateway",
                "version": self._version,
                "services": services,
                "timestamp": self._now(),
            },
        )

    # Klein tries error handlers in the order they are defined.

    @app.handle_errors(MethodNotAllowed)
    def method_not_allowed(self, request: IRequest, failure: Failure) -> bytes:
        """
        A known path asked with a method it does not serve: 405 with Allow.
        """
        allowed: List[str] = sorted(failure.value.valid_methods or [])
        request.setHeader(b"allow", ", ".join(allowed).encode("ascii"))
        return render_error(
            request,
            GatewayError(
                "METHOD_NOT_ALLOWED",
                f"Method {_method(request)} not allowed on {_raw_path(request)}",
            ),
        )

    @app.handle_errors(HTTPException)
    def no_route(self, request: IRequest, failure: Failure) -> bytes:
        """
        Any other routing outcome (NotFound; a redirect we never want): 404.
        """
        return _not_found(request)

    @app.handle_errors(GatewayError)
    def gateway_error(self, request: IRequest, failure: Failure) -> bytes:
        """
        An error a handler chose to answer with.
        """
        return render_error(request, failure.value)

    @app.handle_errors(Exception)
    def internal_error(self, request: IRequest, failure: Failure) -> bytes:
        """
        Anything else is our fault: log it whole, answer 500 without it.
        """
        _log.failure(
            "Gateway endpoint {method} {path} failed",
            failure,
            method=_method(request),
            path=_raw_path(request),
            correlation_id=correlation_id(request),
        )
        return render_error(
            request, GatewayError("INTERNAL_ERROR", "Internal server error")
        )
