"""
An echo upstream, for trying the gateway without the shop's services, for
tests and for benchmarks.

C{python -m qeetgw_dev.echo} (or C{qeetgw-echo}) listens on the six default
service ports and answers every request with 200 and a JSON description of
what it received, so one can see exactly what the gateway forwarded::

    {"service": "user-service", "method": "GET", "path": "/users/7",
     "query": "a=1", "headers": {"host": ["localhost:8082"], ...},
     "body": "", "bodyLength": 0}

The health paths (C{/actuator/health}, C{/health}) answer C{{"status":"UP"}}.
"""

from __future__ import annotations

import argparse
import base64
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence

from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IReactorTCP
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from qeetgw.errors import JSON_CONTENT_TYPE, dumps

_log = Logger()

#: The service each default port stands for (SPEC.md's default URLs).
DEFAULT_SERVICES: Mapping[int, str] = {
    4001: "auth-service",
    8082: "user-service",
    8083: "product-service",
    8084: "order-service",
    8085: "payment-service",
    8080: "inventory-service",
}

#: The services' health paths: Spring's and the others'.
HEALTH_PATHS = frozenset([b"/actuator/health", b"/health"])


def service_for_port(port: int) -> str:
    """
    The service name an echo on C{port} answers as: the default service on
    that port, else C{"echo"}.
    """
    return DEFAULT_SERVICES.get(port, "echo")


def describe(request: IRequest, service: str) -> Dict[str, Any]:
    """
    What C{request} looked like on arrival, as the echo's JSON body.

    C{path} and C{query} are the raw bytes of the request target (percent-
    encoding kept) read as latin-1; C{query} is C{None} when there was no
    C{?} at all, C{""} when there was an empty one.  The body is text when it
    is UTF-8, else base64 with C{"bodyEncoding": "base64"}.
    """
    path, question_mark, query = request.uri.partition(b"?")
    headers: Dict[str, List[str]] = {}
    for name, values in request.requestHeaders.getAllRawHeaders():
        headers.setdefault(name.decode("latin-1").lower(), []).extend(
            value.decode("latin-1") for value in values
        )
    body = request.content.read() if request.content is not None else b""
    result: Dict[str, Any] = {
        "service": service,
        "method": request.method.decode("latin-1"),
        "path": path.decode("latin-1"),
        "query": query.decode("latin-1") if question_mark else None,
        "headers": headers,
    }
    try:
        result["body"] = body.decode("utf-8")
    except UnicodeDecodeError:
        result["body"] = base64.b64encode(body).decode("ascii")
        result["bodyEncoding"] = "base64"
    result["bodyLength"] = len(body)
    return result


class EchoResource(Resource):
    """
    Answers any method on any path with L{describe}'s JSON, and the health
    paths with C{{"status":"UP"}}.
    """

    isLeaf = True

    def __init__(self, service: str) -> None:
        """
        @param service: the name to answer as (C{"user-service"}).
        """
        super().__init__()
        self.service = service

    def render(self, request: IRequest) -> bytes:
        """
        Answer C{request} with 200 and JSON.
        """
        path = request.uri.partition(b"?")[0]
        if path in HEALTH_PATHS:
            body = dumps({"status": "UP"})
        else:
            body = dumps(describe(request, self.service))
        request.setHeader(b"content-type", JSON_CONTENT_TYPE)
        request.setHeader(b"content-length", b"%d" % (len(body),))
        return body


class _EchoSite(Site):
    """
    A L{Site} whose access log is one structured event a request, or none.
    """

    # No "Starting factory" lines for every port.
    noisy = False

    def __init__(self, resource: EchoResource, log_requests: bool) -> None:
        super().__init__(resource)
        self._log_requests = log_requests

    def log(self, request: Request) -> None:
        """
        Log C{request} once it is answered, when asked to; never in Twisted's
        combined-log format.
        """
        if self._log_requests:
            _log.info(
                "{service} {method} {uri} {code}",
                service=self.resource.service,
                method=request.method.decode("latin-1"),
                uri=request.uri.decode("latin-1"),
                code=request.code,
            )


def echo_site(name: str, log_requests: bool = False) -> Site:
    """
    A site that echoes as service C{name}, to listen on wherever the caller
    likes (port 0 in tests and benchmarks).

    @param log_requests: log one event a request (off by default: tests and
        benchmarks do not want them).
    """
    return _EchoSite(EchoResource(name), log_requests)


def listen(
    reactor: IReactorTCP, host: str, ports: Sequence[int], log_requests: bool = False
) -> List[IListeningPort]:
    """
    Listen on each of C{ports} of C{host} with an echo named for the port.

    @raise CannotListenError: when a port cannot be had; the ports already
        opened are closed again.
    """
    opened: List[IListeningPort] = []
    try:
        for port in ports:
            service = service_for_port(port)
            listening = reactor.listenTCP(
                port, echo_site(service, log_requests), interface=host
            )
            opened.append(listening)
            address = listening.getHost()
            _log.info(
                "Echo {service} listening on {host}:{port}",
                service=service,
                host=getattr(address, "host", host),
                port=getattr(address, "port", port),
            )
    except CannotListenError:
        for listening in opened:
            listening.stopListening()
        raise
    return opened


def _port_list(text: str) -> List[int]:
    """
    Parse C{"8082"} or C{"8082,8083"} into port numbers, for argparse.
    """
    try:
        ports = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    for port in ports:
        if not 0 <= port <= 65535:
            raise argparse.ArgumentTypeError(f"not a port number: {port}")
    return ports


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """
    The command line of C{qeetgw-echo}: C{host}, C{ports} (a flat list) and
    C{quiet}.
    """
    parser = argparse.ArgumentParser(
        prog="qeetgw-echo",
        description="An echo upstream for the QeetMart gateway: answers any "
        "request with a JSON description of it.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (%(default)s)"
    )
    parser.add_argument(
        "--ports",
        nargs="+",
        type=_port_list,
        default=[list(DEFAULT_SERVICES)],
        metavar="PORT",
        help="ports to listen on, space- or comma-separated "
        "(the six default service ports); 0 picks a free one",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="do not log each request"
    )
    options = parser.parse_args(argv)
    options.ports = [port for group in options.ports for port in group]
    return options


def main(argv: Optional[Sequence[str]] = None) -> None:
    """
    Run the echo upstream until interrupted; the C{qeetgw-echo} script.
    """
    options = parse_args(argv)
    # Imported here: importing it installs the default reactor, which a
    # module that tests import must not do.
    from twisted.internet import reactor

    try:
        listen(reactor, options.host, options.ports, not options.quiet)
    except CannotListenError as error:
        raise SystemExit(
            f"qeetgw-echo: cannot listen on {error.interface or '*'}:{error.port}: "
            f"{error.socketError}"
        )
    # Events logged so far (the listening lines) were buffered; they come out
    # now, in order.
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    reactor.run()


if __name__ == "__main__":
    main()
