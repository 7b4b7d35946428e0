"""
Correlation ids: one per request, kept from the client when it sent a sane
one, made otherwise, sent upstream and returned on every response.
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.web.iweb import IRequest

from qeetgw.fields import KnownNames
from qeetgw.randomness import random_hex
from qeetgw.requeststate import state_of

#: The request header a client may send its own id in, and the response
#: header it comes back in.
HEADER = b"x-correlation-id"
#: The longest client id kept; a longer one is replaced.
MAX_LENGTH = 128
#: The response header's name, encoded once (L{qeetgw.fields}).
_NAMES = KnownNames([HEADER])

def make_id() -> str:
    """
    A fresh id, as the Express gateway makes them: C{req-} and a UUID v4,
    formatted from batched randomness (L{qeetgw.randomness}).
    """
    h = random_hex(32)
    # RFC 9562 version 4: the version nibble is 4, the variant bits 10.
    variant = "89ab"[int(h[16], 16) & 3]
    return f"req-{h[0:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:32]}"


def accept_or_make(
    raw: Optional[bytes], make: Callable[[], str] = make_id
) -> str:
    """
    The id to use for a request whose X-Correlation-ID header is C{raw}.

    The client's value is kept, trimmed of surrounding whitespace, when it is
    1 to L{MAX_LENGTH} printable ASCII characters; anything else (empty,
    too long, control characters, non-ASCII) is replaced by a new id rather
    than passed on to logs and upstreams.
    """
    if raw is not None:
        candidate = raw.strip(b" \t")
        if 0 < len(candidate) <= MAX_LENGTH and all(
            0x20 <= byte <= 0x7E for byte in candidate
        ):
            return candidate.decode("ascii")
    return make()


def correlation_id(request: IRequest) -> str:
    """
    The correlation id of C{request}, chosen on first use and then fixed.

    Choosing it also sets the X-Correlation-ID response header, so every
    response, errors included, carries it.
    """
    state = state_of(request)
    existing = state.correlation_id
    if existing is not None:
        return existing
    headers = request.requestHeaders.getRawHeaders(HEADER)
    chosen = state.correlation_id = accept_or_make(headers[0] if headers else None)
    _NAMES.set(request.responseHeaders, ((HEADER, chosen.encode("ascii")),))
    return chosen
