"""
Readiness: whether this gateway wants new traffic.  Liveness (/health) says
the process is up; readiness (/ready) turns false the moment a drain starts,
so a load balancer stops sending new requests while in-flight ones finish.
"""

from __future__ import annotations

import attrs


@attrs.define
class Readiness:
    """
    The gateway's readiness, shared by the /ready endpoint, the service that
    drains, and the server that closes connections while draining.

    @ivar draining: set when SIGTERM/SIGINT arrived; never cleared.
    """

    draining: bool = False

    @property
    def ready(self) -> bool:
        """
        Whether new requests are welcome.
        """
        return not self.draining
