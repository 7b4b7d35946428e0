"""
The six upstream services: their routes, the variables that place them
(C{<NAME>_SERVICE_URL}, C{<NAME>_TIMEOUT_MS}, C{<NAME>_SERVICE_HEALTH_PATH})
and the L{ServiceConfig}s built from those.
"""

from __future__ import annotations

from typing import Any, List, Mapping, NamedTuple, Tuple

from qeetgw.config.parsers import optional_positive
from qeetgw.config.paths import health_path
from qeetgw.config.urls import service_urls
from qeetgw.config.values import ServiceConfig
from qeetgw.config.variable import Variable


class _Service(NamedTuple):
    """
    One service as SPEC.md routes it, with its variables' defaults.
    """

    name: str
    client_prefix: str
    upstream_prefix: str
    url: str
    health_path: str


_SERVICE_TABLE: Tuple[_Service, ...] = (
    _Service("auth-service", "/api/v1/auth", "/auth", "http://localhost:4001", "/actuator/health"),
    _Service("user-service", "/api/v1/users", "/users", "http://localhost:8082",
             "/actuator/health"),
    _Service("product-service", "/api/v1/products", "/products", "http://localhost:8083",
             "/actuator/health"),
    _Service("order-service", "/api/v1/orders", "/orders", "http://localhost:8084", "/health"),
    _Service("payment-service", "/api/v1/payments", "/payments", "http://localhost:8085",
             "/health"),
    _Service("inventory-service", "/api/v1/inventory", "/inventory", "http://localhost:8080",
             "/health"),
)


def _variable_prefix(name: str) -> str:
    """
    C{"user-service"} -> C{"USER_SERVICE"}.
    """
    return name.upper().replace("-", "_")


def _url_variable(name: str) -> str:
    """
    C{"user-service"} -> C{"USER_SERVICE_URL"}.
    """
    return f"{_variable_prefix(name)}_URL"


def _timeout_variable(name: str) -> str:
    """
    C{"user-service"} -> C{"USER_TIMEOUT_MS"}.
    """
    return f"{_variable_prefix(name)[: -len('_SERVICE')]}_TIMEOUT_MS"


def _health_path_variable(name: str) -> str:
    """
    C{"user-service"} -> C{"USER_SERVICE_HEALTH_PATH"}.
    """
    return f"{_variable_prefix(name)}_HEALTH_PATH"


def _service_variables() -> Tuple[Variable, ...]:
    """
    The URL, timeout and health-path variables of every service, in table
    order.
    """
    variables: List[Variable] = []
    for service in _SERVICE_TABLE:
        name = service.name
        variables += [
            Variable(
                _url_variable(name), service.url, service_urls,
                f"Base URL of the {name}; a comma list for several instances",
            ),
            Variable(
                _timeout_variable(name), None, optional_positive,
                f"The {name}'s own proxy timeout, over GATEWAY_PROXY_TIMEOUT_MS",
            ),
            Variable(
                _health_path_variable(name), service.health_path, health_path,
                f"Path probed for the {name}'s health",
            ),
        ]
    return tuple(variables)


#: The variables C{Config.services} is built from, in the order C{--help}
#: lists them.
SERVICE_VARIABLES: Tuple[Variable, ...] = _service_variables()

#: The variable of each service's URLs, in table order.
SERVICE_URL_VARIABLES: Tuple[str, ...] = tuple(
    _url_variable(service.name) for service in _SERVICE_TABLE
)


def build_services(values: Mapping[str, Any]) -> Tuple[ServiceConfig, ...]:
    """
    The six services, in table order, with their configured URL and health
    path.  Only called when every value parsed.
    """
    services: List[ServiceConfig] = []
    for service in _SERVICE_TABLE:
        url_variable = _url_variable(service.name)
        urls = values[url_variable]
        services.append(
            ServiceConfig(
                name=service.name,
                client_prefix=service.client_prefix,
                upstream_prefix=service.upstream_prefix,
                url=urls[0],
                health_path=values[_health_path_variable(service.name)],
                url_variable=url_variable,
                urls=urls if len(urls) > 1 else (),
                timeout_ms=values[_timeout_variable(service.name)],
            )
        )
    return tuple(services)
