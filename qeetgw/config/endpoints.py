"""
Endpoint descriptions (C{--port}, METRICS_PORT), checked with Twisted's
own parser before anything listens.

L{serverFromString} builds the endpoint a description names, plugins
included, and for C{ssl:} loads the key and certificate: a missing or bad
file is a problem line at start-up rather than a traceback when listening.
It needs a reactor only to hand to the endpoint it builds, so a
L{ListenRecorder} stands in for one.  Twisted does not range-check a TCP
port until it listens; for its TCP and TLS endpoints the check asks the
endpoint to listen on the recorder, which notes the port and opens nothing.
"""

from __future__ import annotations

from typing import Any, List, Optional

from twisted.internet.endpoints import (
    SSL4ServerEndpoint,
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    serverFromString,
)
from twisted.internet.protocol import Factory

from qeetgw.config.errors import Invalid, one_line

#: Two descriptions to show in a problem line or C{--help}.
ENDPOINT_EXAMPLES = "tcp:4000:interface=0.0.0.0 or ssl:4443:privateKey=key.pem:certKey=cert.pem"

#: The endpoints whose C{listen} only hands the reactor a port: Twisted's
#: own TCP and TLS ones.  No other endpoint is asked to listen during the
#: check, as listening may act (the systemd endpoint closes the socket it
#: inherited; a plugin's may start a process).  Matched by exact type, so a
#: subclass that overrides C{listen} is left alone too.
_PORT_ENDPOINTS = (TCP4ServerEndpoint, TCP6ServerEndpoint, SSL4ServerEndpoint)


class ListenRecorder:
    """
    The reactor an endpoint is built with while its description is checked:
    it notes the port a TCP or TLS endpoint asks to listen on, and listens
    on nothing.

    @ivar ports: the ports asked for, in order.
    """

    def __init__(self) -> None:
        self.ports: List[int] = []

    def listenTCP(
        self, port: int, factory: object, backlog: int = 50, interface: str = ""
    ) -> None:
        """
        C{IReactorTCP.listenTCP}, as a TCP endpoint calls it: note the port.
        """
        self.ports.append(port)

    def listenSSL(
        self,
        port: int,
        factory: object,
        contextFactory: object,
        backlog: int = 50,
        interface: str = "",
    ) -> None:
        """
        C{IReactorSSL.listenSSL}, as an C{ssl:} endpoint calls it: note the
        port.
        """
        self.ports.append(port)


def listening_port(endpoint: Any, recorder: ListenRecorder) -> Optional[int]:
    """
    The port C{endpoint}, built with C{recorder} as its reactor, would
    listen on; L{None} when it has none (a UNIX socket) or is not one of
    Twisted's TCP and TLS endpoints (systemd's socket, a plugin's endpoint),
    which are never asked to listen.
    """
    if type(endpoint) not in _PORT_ENDPOINTS:
        return None
    endpoint.listen(Factory())
    return recorder.ports[-1] if recorder.ports else None


def endpoint(text: str) -> str:
    """
    A whole Twisted server endpoint description, such as twistd's own
    C{--port} takes.
    """
    description = text.strip()
    recorder = ListenRecorder()
    try:
        built = serverFromString(recorder, description)
    # Endpoint parsers raise anything: ValueError, TypeError, OSError, SSL errors.
    except Exception as error:
        if description.startswith("systemd:"):
            raise Invalid(
                "systemd passed no socket there (LISTEN_FDS, LISTEN_PID): start the "
                "gateway through its .socket unit (see contrib/systemd/)"
            )
        raise Invalid(
            f"must be a Twisted endpoint description such as {ENDPOINT_EXAMPLES} "
            f"({one_line(error)})"
        )
    port = listening_port(built, recorder)
    if port is not None and not 0 <= port <= 65535:
        raise Invalid("must have a port from 0 to 65535")
    return description


def optional_endpoint(text: str) -> Optional[str]:
    """
    An endpoint description, or nothing when blank.
    """
    return endpoint(text) if text.strip() else None
