"""
The one JSON error shape every error of the gateway's own takes.

``{"success": false, "error": {"message": ..., "code": ..., "correlationId": ...}}``
with ``Content-Type: application/json; charset=utf-8``.  What an upstream
answers is never passed through here: only what the gateway itself says.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring
from typing import Any, Mapping, Optional

from twisted.web.iweb import IRequest

from qeetgw.correlation import correlation_id
from qeetgw.fields import encode_fields, set_fields, stored_name

JSON_CONTENT_TYPE = b"application/json; charset=utf-8"

#: Content-Type of an envelope, and the name Content-Length is kept under,
#: encoded once (L{qeetgw.fields}).
_CONTENT_TYPE_FIELDS = encode_fields([(b"content-type", JSON_CONTENT_TYPE)])
_CONTENT_LENGTH = stored_name(b"content-length")

#: The status each error code is sent with.
STATUS_FOR_CODE: Mapping[str, int] = {
    "BAD_REQUEST": 400,
    "UNAUTHORIZED": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "REQUEST_TIMEOUT": 408,
    "PAYLOAD_TOO_LARGE": 413,
    "URI_TOO_LONG": 414,
    "TOO_MANY_REQUESTS": 429,
    "HEADERS_TOO_LARGE": 431,
    "INTERNAL_ERROR": 500,
    "SERVICE_UNAVAILABLE": 502,
    "GATEWAY_TIMEOUT": 504,
}


class GatewayError(Exception):
    """
    An error the gateway answers itself, with one of L{STATUS_FOR_CODE}'s
    codes.  Raise it (or return it) anywhere; one place renders it.
    """

    def __init__(self, code: str, message: str, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status if status is not None else STATUS_FOR_CODE[code]


# Made once: json.dumps with keyword arguments builds an encoder per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(value: Any) -> bytes:
    """
    JSON as Express's C{res.json} writes it: compact, UTF-8.
    """
    return _ENCODER.encode(value).encode("utf-8")


def envelope(code: str, message: str, correlation_id: Optional[str]) -> bytes:
    """
    The body of an error response: the bytes L{dumps} gives for
    C{{"success": false, "error": {"message": ..., "code": ...,
    "correlationId": ...}}}, with only the three strings encoded per call
    (by the function C{json} uses for a string with C{ensure_ascii=False}).
    """
    text = '{"success":false,"error":{"message":' + encode_basestring(message)
    text += ',"code":' + encode_basestring(code)
    if correlation_id is not None:
        text += ',"correlationId":' + encode_basestring(correlation_id)
    return (text + "}}").encode("utf-8")


def render_error(request: IRequest, error: GatewayError) -> bytes:
    """
    Set C{request}'s status and content type for C{error} and return the
    body, for a C{render} method to return (or to write and finish).
    """
    request.setResponseCode(error.status)
    headers = request.responseHeaders
    set_fields(headers, _CONTENT_TYPE_FIELDS)
    # After the Content-Type: choosing the correlation id sets its field.
    body = envelope(error.code, error.message, correlation_id(request))
    set_fields(headers, ((_CONTENT_LENGTH, b"%d" % (len(body),)),))
    return body


def write_error(request: IRequest, error: GatewayError) -> None:
    """
    Answer C{request} with C{error} and finish it: for code that answers
    after C{render} returned C{NOT_DONE_YET}.
    """
    body = render_error(request, error)
    request.write(body)
    request.finish()


def not_found(request: IRequest) -> GatewayError:
    """
    The 404 for a request nothing serves, naming its method and raw path.
    """
    method = request.method.decode("latin-1")
    path = (request.path or b"/").decode("latin-1")
    return GatewayError("NOT_FOUND", f"Route {method} {path} not found")
