"""
Every private name of Twisted that qeetgw uses, and nowhere else.

Twisted's compatibility policy covers its public API only: a name that
starts with an underscore, or lives in a module that does, may change in
any release without a deprecation.  qeetgw needs a few: each is used in this
module only, behind a name of ours, with why we need it and the Twisted
versions whose source was read for it.  setup.py bounds Twisted to the range
CI tests (C{make test-oldest} and C{make test}); when a new Twisted breaks
one of these, this module is the one to change, and the tests named with
each entry say so.

Everything here was read in the source of Twisted 16.6.0, 17.1.0, 17.9.0,
18.4.0, 18.9.0, 21.2.0, 22.1.0, 22.4.0, 22.10.0, 23.8.0, 23.10.0, 24.3.0,
24.7.0, 24.10.0, 24.11.0, 25.5.0, 26.4.0 and 26.10.0; "since" is the first
of those that has it as described, and each is unchanged from there through
26.10.0.  (qeetgw itself needs 26.10.0 for other reasons: see setup.py.)  The
header-field functions, last below, were read in 26.10.0 only.

This module imports nothing of ours, so that any module may use it.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple

from OpenSSL import SSL
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.web.http import (
    HTTPChannel,
    _ChunkedTransferDecoder,
    _MalformedChunkedDataError,
)
from twisted.web.http_headers import Headers
from twisted.web.server import Request
from zope.interface import implementer

__all__ = [
    "ChunkedDecoder",
    "HookedHTTPChannel",
    "HookedRequest",
    "IOpenSSLTrustRoot",
    "MalformedChunkedData",
    "TrustRoot",
    "add_known_fields",
    "add_received_fields",
    "add_stored_fields",
    "clear_exit_signal",
    "set_known_fields",
    "set_stored_fields",
    "set_stored_values",
    "stored_field",
]


# ---------------------------------------------------------------------------
# twisted.internet: the reactor, endpoints, TLS
# ---------------------------------------------------------------------------


def clear_exit_signal(reactor: Any) -> None:
    """
    Forget the signal that stopped C{reactor}, so that twistd exits 0.

    Why: twistd re-raises the SIGTERM/SIGINT that stopped the reactor once
    the reactor is done, so the process ends "killed by signal" (exit 143).
    After an orderly drain that is a clean shutdown, which process
    supervisors and Kubernetes read from exit status 0; Twisted has no public
    way to say so.  (L{qeetgw.process.service}, L{qeetgw.process.supervisor};
    tests: tests/e2e/test_drain.py.)

    Private: C{reactor._exitSignal}, set by the reactor's SIGINT, SIGTERM
    and SIGBREAK handlers and declared by the private
    C{twisted.internet.interfaces._ISupportsExitSignalCapturing}; twistd's
    runner copies it when the reactor stops and re-raises it.  Since 18.4.0.
    """
    if getattr(reactor, "_exitSignal", None) is not None:
        reactor._exitSignal = None


@implementer(IOpenSSLTrustRoot)
class TrustRoot:
    """
    A trust root of our own for L{twisted.web.client.BrowserLikePolicyForHTTPS}:
    a subclass loads the certificate authorities into each TLS context in
    L{add_ca_certificates}.

    Why: the public trust roots are the platform's CAs (C{platformTrust()})
    or given CAs (C{trustRootFromCertificates()}), never both; adding a
    private CA for one upstream must not stop public ones from verifying.
    (L{qeetgw.upstream.tls}; tests: tests/e2e/test_tls.py.)

    Private: the interface C{twisted.internet._sslverify.IOpenSSLTrustRoot}
    (the type C{BrowserLikePolicyForHTTPS} expects of its C{trustRoot}) and
    its one method C{_addCACertsToContext}.  Since 16.6.0 or earlier.
    """

    def add_ca_certificates(self, context: SSL.Context) -> None:
        """
        Load the trusted certificate authorities into C{context}.
        """
        raise NotImplementedError

    def _addCACertsToContext(self, context: SSL.Context) -> None:
        self.add_ca_certificates(context)


# ---------------------------------------------------------------------------
# twisted.web: the HTTP server
# ---------------------------------------------------------------------------

#: The error a chunked body decoder raises for a malformed body;
#: C{HTTPChannel.rawDataReceived} answers it with a bare 400.  Private:
#: C{twisted.web.http._MalformedChunkedDataError}.  Since 16.6.0 or earlier.
MalformedChunkedData = _MalformedChunkedDataError


class ChunkedDecoder(_ChunkedTransferDecoder):
    """
    twisted.web's decoder of a chunked request body, with two hooks on each
    chunk-size line, for a subclass to judge it as it is read.

    Why: twisted.web reads a chunk-size of any number of hex digits and then
    waits for that many bytes; the gateway refuses too many digits, and a
    chunk that cannot fit in the body limit, before the chunk's data
    arrives.  (L{qeetgw.server}; tests: tests/test_linger.py,
    tests/test_clientlimits.py.)

    Private: the class C{twisted.web.http._ChunkedTransferDecoder}; its
    C{dataReceived} calls C{_dataReceived_<state>()} while that returns
    true; in state C{CHUNK_LENGTH} C{_buffer} (a C{bytearray}) starts with
    the chunk-size line, complete or not, and on success the line is consumed
    and C{length} and C{state} (C{BODY}, or C{TRAILER} for the last chunk)
    are set.  As described since 22.1.0 (before, the state methods took and
    returned the data).
    """

    def check_chunk_size_line(self, line: bytearray) -> None:
        """
        The chunk-size line as received so far, complete or not, before it
        is parsed (do not keep it: it is the decoder's buffer).  Raise a
        subclass of L{MalformedChunkedData} to refuse it.
        """

    def chunk_size_read(self, length: int) -> None:
        """
        A chunk-size line declared C{length} bytes of data to come (not
        called for the last, zero-size chunk).
        """

    def _dataReceived_CHUNK_LENGTH(self) -> bool:
        self.check_chunk_size_line(self._buffer)
        if not super()._dataReceived_CHUNK_LENGTH():
            return False
        if self.state == "BODY":
            self.chunk_size_read(self.length)
        return True


class HookedRequest(Request):
    """
    twisted.web's server request, with a hook for when twisted.web has done
    with it.

    Why: the site counts a request in flight from the moment it is rendered
    until its response is finished and its channel has moved on, for the
    drain on shutdown.  (L{qeetgw.server}; tests: tests/test_linger.py,
    tests/e2e/test_drain.py.)

    Private: C{twisted.web.http.Request._cleanup}, called by C{finish} once
    the response is complete; it tells the channel (C{requestDone}, after
    which the channel goes on to the next request), then deletes
    C{self.channel}.  Since 16.6.0 or earlier.
    """

    def cleaned_up(self, channel: HTTPChannel) -> None:
        """
        twisted.web has done with this request, whose channel was
        C{channel}.
        """

    def _cleanup(self) -> None:
        channel = self.channel
        super()._cleanup()
        self.cleaned_up(channel)


class HookedHTTPChannel(HTTPChannel):
    """
    twisted.web's HTTP channel, with the private state and hooks the
    gateway's channel needs behind names of ours.

    Why: the gateway reads requests itself (the head with llhttp, the body
    with its own limits, L{qeetgw.server}) and leaves the writing of
    responses, the producer dance with the transport and the request queue
    to twisted.web; reading without twisted.web's line parser means setting
    the state that parser would have set.  It also gives its one timer a
    meaning per phase of the connection, and lingers after a refusal.
    (L{qeetgw.server}; tests: tests/test_clientlimits.py,
    tests/test_linger.py, tests/test_proxy.py.)

    Private, all of C{twisted.web.http.HTTPChannel}; each is described on the
    method that uses it.  The gateway never calls C{HTTPChannel}'s reading
    methods (C{dataReceived}, C{lineReceived}, C{rawDataReceived},
    C{allHeadersReceived}, C{allContentReceived}); it makes each request
    with C{requestFactory}, appends it to C{requests} and calls
    C{requestReceived} on it, as C{HTTPChannel} does; C{requestDone} is
    C{HTTPChannel}'s, whose replay of C{_dataBuffer} (never filled) through
    C{setLineMode} reads nothing.  As described since 23.10.0.
    """

    def bad_request_received(self) -> None:
        """
        twisted.web found the request malformed (for the gateway, only ever
        a form body, whose parsing is off); by default its bare 400 and a
        close.

        Private: C{_respondToBadRequestAndDisconnect}, which HTTPChannel (and
        its Request, for a bad form body) calls for every malformed request.
        Since 16.6.0 or earlier.
        """
        super()._respondToBadRequestAndDisconnect()

    def _respondToBadRequestAndDisconnect(self) -> None:
        self.bad_request_received()

    def begin_handling(self) -> None:
        """
        A request has arrived whole and is about to be answered: turn the
        timer off, and tell twisted.web that a request is being handled, so
        that a full send buffer pauses the response's producer rather than
        the reading of the connection (C{pauseProducing}), and
        C{requestDone} goes on to the next request.

        Private: C{_handlingRequest}, set true by C{allContentReceived} and
        false by C{requestDone}; C{pauseProducing} and C{resumeProducing}
        read it.  Since 16.6.0 or earlier.
        """
        self.setTimeout(None)
        self._handlingRequest = True

    def pause_reading(self) -> None:
        """
        Stop reading from the connection until C{requestDone} resumes it:
        enough pipelined bytes are kept.

        Private: C{_networkProducer}, the transport as an C{IPushProducer},
        which C{requestDone} resumes unless the transport's own send buffer
        is full (C{_waitingForTransport}).  Since 17.1.0.
        """
        self._networkProducer.pauseProducing()

    def set_timeout_after_request(self, timeout: Optional[float]) -> None:
        """
        The timeout the channel sets once the request being answered is
        done (call it before C{requestDone}).

        Private: C{_savedTimeOut}: C{allContentReceived} turns the timer off
        while a request is answered, keeping the timeout there, and
        C{requestDone} restores it (when not 0 or L{None}).  Since 16.6.0 or
        earlier.
        """
        self._savedTimeOut = timeout

    def release_transport(self) -> None:
        """
        Stop being the transport's producer, as C{loseConnection} does, and
        have the transport read again (a full send buffer, or a pipelined
        backlog, may have paused it).

        Private: C{_networkProducer}, the transport as an C{IPushProducer},
        whose producer the channel registers itself as.  Since 17.1.0.
        """
        self._networkProducer.unregisterProducer()
        self._networkProducer.resumeProducing()


# ---------------------------------------------------------------------------
# twisted.web: header fields
# ---------------------------------------------------------------------------


def _stored_fields(headers: Headers) -> Dict[bytes, List[bytes]]:
    # Private: C{Headers._rawHeaders}, the dict of a Headers' fields: each
    # name as the Headers keeps it (in 26.10.0 canonical Http-Header-Case,
    # the form written on the wire; not relied on, see stored_field) to the
    # list of its values, each with its line breaks already replaced;
    # C{getAllRawHeaders} iterates it, in insertion order, to write the
    # head.  Read in 26.10.0 only (the one Twisted qeetgw supports here).
    fields: Dict[bytes, List[bytes]] = headers._rawHeaders
    return fields


def stored_field(name: bytes, value: bytes) -> Tuple[bytes, bytes]:
    """
    C{name} and C{value} as a L{Headers} keeps them once set (the name in
    its canonical case, line breaks in the value replaced by spaces), for
    L{set_stored_fields} and L{add_stored_fields}: the work C{setRawHeaders}
    does on every call, done once, for a field the gateway sends on every
    response.

    Why: canonicalising a name and sanitising a value on each of the dozen
    fields the gateway sets on every response (the security headers, CORS,
    the rate-limit headers, the correlation id) was a tenth of its CPU
    time, and always gave the same bytes.  (L{qeetgw.fields}; tests:
    tests/test_fields.py.)

    Private: see L{_stored_fields}; the name and value are found by setting
    them on a scratch L{Headers}, so they are whatever this Twisted keeps.
    """
    scratch = Headers()
    scratch.setRawHeaders(name, [value])
    ((stored_name, (stored_value,)),) = _stored_fields(scratch).items()
    return stored_name, stored_value


def set_stored_fields(headers: Headers, fields: Iterable[Tuple[bytes, bytes]]) -> None:
    """
    Set each field C{name} of C{headers} to the one value C{value}, replacing
    any it had, as C{setRawHeaders} does, for each C{(name, value)} of
    C{fields}; each must be as L{stored_field} returns it (or known to be:
    the canonical name, a value without CR or LF).  Private: see
    L{_stored_fields}.
    """
    stored = _stored_fields(headers)
    for name, value in fields:
        stored[name] = [value]


def set_stored_values(headers: Headers, name: bytes, values: Iterable[bytes]) -> None:
    """
    Set field C{name} of C{headers} to C{values}, as C{setRawHeaders} does,
    when they are as another L{Headers} keeps them (from its
    C{getAllRawHeaders}): copying fields between two L{Headers} without
    canonicalising and sanitising them again.  Private: see
    L{_stored_fields}.
    """
    _stored_fields(headers)[name] = list(values)


def set_known_fields(
    headers: Headers, names: Dict[bytes, bytes], fields: Iterable[Tuple[bytes, bytes]]
) -> None:
    """
    As C{headers.setRawHeaders(name, [value])} for each C{(name, value)} of
    C{fields}: a name in C{names} (a name to its stored form) with a value
    (bytes) without CR or LF goes in as it is, any other through
    C{setRawHeaders}.
    Private: see L{_stored_fields}.
    """
    stored = _stored_fields(headers)
    for name, value in fields:
        key = names.get(name)
        # 13 and 10, CR and LF: an int is found by memchr, several times
        # faster than a one-byte bytes.
        if key is None or 13 in value or 10 in value:
            headers.setRawHeaders(name, [value])
        else:
            stored[key] = [value]


def add_known_fields(
    headers: Headers, names: Dict[bytes, bytes], fields: Iterable[Tuple[bytes, bytes]]
) -> None:
    """
    As C{headers.addRawHeader(name, value)} for each C{(name, value)} of
    C{fields}; C{names} as for L{set_known_fields}.  Private: see
    L{_stored_fields}.
    """
    stored = _stored_fields(headers)
    for name, value in fields:
        key = names.get(name)
        # 13 and 10, CR and LF: an int is found by memchr, several times
        # faster than a one-byte bytes.
        if key is None or 13 in value or 10 in value:
            headers.addRawHeader(name, value)
        else:
            values = stored.get(key)
            if values is None:
                stored[key] = [value]
            else:
                values.append(value)


def add_stored_fields(headers: Headers, fields: Iterable[Tuple[bytes, bytes]]) -> None:
    """
    Add each C{(name, value)} of C{fields} to C{headers}, as C{addRawHeader}
    does; each as for L{set_stored_fields}.  Private: see L{_stored_fields}.
    """
    stored = _stored_fields(headers)
    for name, value in fields:
        values = stored.get(name)
        if values is None:
            stored[name] = [value]
        else:
            values.append(value)


#: Field names as clients send them, to their stored form: a client's names
#: repeat from request to request.  Bounded: past it, names are
#: canonicalised as they come.
_RECEIVED_NAMES: Dict[bytes, bytes] = {}
_MAX_RECEIVED_NAMES = 1024


def add_received_fields(headers: Headers, fields: Iterable[Tuple[bytes, bytes]]) -> None:
    """
    As C{headers.addRawHeader(name, value)} for each C{(name, value)} of
    C{fields}, the fields of a request head that llhttp parsed: each name a
    token, each value without CR, LF or NUL (checked again: an int is found
    by memchr).  A name is canonicalised once, the first time it is seen.
    Private: see L{_stored_fields}.
    """
    stored = _stored_fields(headers)
    names = _RECEIVED_NAMES
    for name, value in fields:
        key = names.get(name)
        if key is None:
            if len(names) >= _MAX_RECEIVED_NAMES:
                headers.addRawHeader(name, value)
                continue
            key = stored_field(name, b"x")[0]
            names[name] = key
        if 13 in value or 10 in value or 0 in value:
            headers.addRawHeader(name, value)
            continue
        values = stored.get(key)
        if values is None:
            stored[key] = [value]
        else:
            values.append(value)
