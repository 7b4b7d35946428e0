"""
The root of the gateway's resource tree: one reading of the raw request
target decides between the API chain and the gateway's own endpoints.
"""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from qeetgw.errors import GatewayError, render_error
from qeetgw.paths import BadTarget, is_api_path
from qeetgw.requeststate import state_of, target_of


class GatewayRoot(Resource):
    """
    The root of the tree.  It answers a body refused as too large, reads
    the raw request target (never twisted.web's decoded segments), and hands
    the request to the API chain or to the gateway's own endpoints.
    """

    # A leaf: the whole path stays in postpath, which is what the Klein
    # resource reads, and the API chain reads the raw target itself.
    isLeaf = True

    def __init__(self, api: IResource, own: IResource) -> None:
        super().__init__()
        self._api = api
        self._own = own

    def render(self, request: IRequest) -> Any:
        """
        Dispatch C{request}; a target that cannot be read safely is a 400.
        """
        if state_of(request).body_refused:
            return self._too_large(request)
        try:
            target = target_of(request)
        except BadTarget as bad:
            return render_error(request, GatewayError("BAD_REQUEST", str(bad)))
        if is_api_path(target.path):
            return self._api.render(request)
        return self._own.render(request)

    @staticmethod
    def _too_large(request: IRequest) -> bytes:
        """
        The 413 for a body refused while it arrived (see
        L{qeetgw.server.GatewayRequest}); the connection closes after it.
        """
        request.setHeader(b"connection", b"close")
        limit = state_of(request).body_limit
        return render_error(
            request,
            GatewayError(
                "PAYLOAD_TOO_LARGE",
                f"Request body is larger than the limit of {limit} bytes",
            ),
        )
