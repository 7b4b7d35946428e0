"""
The whole gateway in memory: L{qeetgw.site.build_site} over a recording
in-memory upstream, a fake clock, and tokens minted here with pyjwt (never
with the code under test).
"""

from __future__ import annotations

import base64
from typing import Any, Dict, Mapping, Optional

import jwt
from twisted.internet.testing import MemoryReactorClock

from qeetgw.config import load_config
from qeetgw.site import Gateway, build_site
from tests.memory import Connection, RawResponse, RecordingUpstream
from tests.memoryupstream import MemoryUpstreams

#: A 32-byte HMAC key, and JWT_SECRET as the auth-service is given it.
KEY = b"k" * 32
SECRET = base64.b64encode(KEY).decode()
ISSUER = "http://localhost:4001"
#: The fake clock's "now": tokens are minted around it.
NOW = 1_800_000_000


def token(claims: Optional[Mapping[str, Any]] = None, key: bytes = KEY, algorithm: str = "HS256", **headers: Any) -> str:
    """
    An access token as the auth-service issues them, with C{claims} added
    or replaced (a value of L{None} removes a claim).
    """
    payload: Dict[str, Any] = {
        "sub": "alice@example.com",
        "userId": 42,
        "role": "USER",
        "tokenType": "access",
        "iss": ISSUER,
        "iat": NOW - 10,
        "exp": NOW + 900,
    }
    for name, value in (claims or {}).items():
        if value is None:
            payload.pop(name, None)
        else:
            payload[name] = value
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers or None)


class MemoryGateway:
    """
    A gateway built from C{env} (every service on one recording upstream),
    driven with raw HTTP bytes.
    """

    def __init__(
        self,
        env: Optional[Mapping[str, str]] = None,
        answer: Any = None,
        metrics: Any = None,
        reactor: Optional[MemoryReactorClock] = None,
    ) -> None:
        self.clock = reactor if reactor is not None else MemoryReactorClock()
        self.clock.advance(NOW)
        self.upstream = RecordingUpstream(answer)
        #: The in-memory upstreams the gateway's own client connects to
        #: (and the probes' agent): C{flush} moves their bytes.
        self.agent = MemoryUpstreams(self.upstream)
        settings = {
            "JWT_SECRET": SECRET,
            **{f"{name}_SERVICE_URL": "http://upstream.test" for name in
               ["AUTH", "USER", "PRODUCT", "ORDER", "PAYMENT", "INVENTORY"]},
            **(env or {}),
        }
        self.config = load_config(settings)
        upstreams = self.agent.upstream_pool(
            self.clock, self.config.upstream_pool_size, self.config.upstream_keepalive_timeout_ms / 1000
        )
        self.gateway: Gateway = build_site(
            self.config, self.clock, upstreams=upstreams, clock=self.clock, metrics=metrics
        )

    def send(self, raw: bytes, peer: Any = None, settle: float = 0.0) -> RawResponse:
        """
        Send one request; return the response.  With C{settle}, let up to
        that many seconds pass on the clock, in small steps, until the
        response is there (retries wait a backoff).
        """
        connection = Connection(self.gateway.site, *([peer] if peer else []))
        connection.send(raw)
        self.agent.flush()
        waited = 0.0
        while settle and waited < settle and not connection.transport.value():
            self.clock.advance(0.05)
            self.agent.flush()
            waited += 0.05
        return connection.response(head=raw.startswith(b"HEAD "))
