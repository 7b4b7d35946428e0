"""
Where the gateway listens: PORT and HOST, or the whole endpoint description
C{--port} gives (the override key LISTEN), combined into C{Config.listen}.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

from twisted.internet.endpoints import quoteStringArgument

from qeetgw.config.endpoints import ENDPOINT_EXAMPLES, endpoint
from qeetgw.config.hosts import listen_host
from qeetgw.config.parsers import DIGITS, whole_number
from qeetgw.config.variable import Variable

#: PORT: the TCP port.  It has no option of its own: --port takes a port
#: number too.
PORT = Variable("PORT", "4000", whole_number(0, 65535), "Port to listen on", option=None)

#: HOST: the interface to listen on.
HOST = Variable("HOST", "0.0.0.0", listen_host, "Interface (IP address or host name) to listen on")


def tcp_description(port: int, host: str) -> str:
    """
    The endpoint description of TCP C{port} on the interface C{host}.
    """
    # The interface is an endpoint argument: an IPv6 address's colons must be
    # escaped, or they would split the description.
    return f"tcp:{port}:interface={quoteStringArgument(host)}"


#: Where the gateway listens when nothing says otherwise.
DEFAULT_LISTEN = tcp_description(PORT.default_value(), HOST.default_value())

#: LISTEN: the override key of C{--port}, which only options give; a port
#: number sets PORT (see L{port_number_as_port}), a description replaces
#: PORT and HOST.
LISTEN = Variable(
    "LISTEN", None, endpoint,
    "Where to listen: a port number (sets PORT), or a Twisted endpoint "
    f"description such as {ENDPOINT_EXAMPLES}, which replaces PORT and "
    f"HOST [env: PORT and HOST, default: {DEFAULT_LISTEN}]",
    option="port", environment=False, label="--port",
)

#: The variables C{Config.listen} is built from, in the order C{--help}
#: lists them.
LISTEN_VARIABLES: Tuple[Variable, ...] = (LISTEN, PORT, HOST)


def port_number_as_port(overrides: Mapping[str, str]) -> Mapping[str, str]:
    """
    C{overrides}, where a LISTEN that is only a port number (C{--port 8080})
    becomes PORT: a port on HOST, as Express's PORT would be.
    """
    listen_override = overrides.get("LISTEN")
    if listen_override is None or not DIGITS.match(listen_override.strip()):
        return overrides
    rewritten: Dict[str, str] = {
        key: value for key, value in overrides.items() if key != "LISTEN"
    }
    rewritten["PORT"] = listen_override
    return rewritten


def listen_description(
    values: Mapping[str, Any], overrides: Mapping[str, str], problems: List[str]
) -> Optional[str]:
    """
    The endpoint description: C{--port}'s whole description, else
    C{tcp:PORT:interface=HOST}.  Giving both C{--port DESCRIPTION} and a
    PORT or HOST override is refused: one of them would be ignored.
    """
    listen = values.get("LISTEN")
    if listen is not None:
        for name in ("PORT", "HOST"):
            if name in overrides:
                problems.append(
                    f"{name}={overrides[name]!r}: cannot be combined with --port {listen!r}; "
                    "give the interface and port in the endpoint description"
                )
        return listen
    if "PORT" not in values or "HOST" not in values:
        return None  # Already a problem line.
    return tcp_description(values["PORT"], values["HOST"])
