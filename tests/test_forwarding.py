"""
Tests for L{qeetgw.upstream.forwarding}: which headers go upstream and come back.
"""

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from qeetgw.upstream.forwarding import (
    client_response_headers,
    connection_named,
    merge_vary,
    upstream_request_headers,
)


def upstream(client: Headers, ip: str = "203.0.113.9", trusted: bool = False) -> Headers:
    return upstream_request_headers(
        client, peer_ip=ip, proto=b"http", correlation_id="req-1", peer_trusted=trusted
    )


class UpstreamRequestHeaderTests(SynchronousTestCase):
    """
    L{upstream_request_headers}.
    """

    def test_hop_by_hop_dropped(self) -> None:
        client = Headers(
            {
                b"Connection": [b"keep-alive, X-Secret-Hop"],
                b"Keep-Alive": [b"timeout=5"],
                b"Proxy-Connection": [b"keep-alive"],
                b"TE": [b"trailers"],
                b"Transfer-Encoding": [b"chunked"],
                b"Upgrade": [b"websocket"],
                b"X-Secret-Hop": [b"1"],
                b"X-Kept": [b"2"],
            }
        )
        headers = upstream(client)
        for name in [b"connection", b"keep-alive", b"proxy-connection", b"te",
                     b"transfer-encoding", b"upgrade", b"x-secret-hop"]:
            with self.subTest(name=name):
                self.assertFalse(headers.hasHeader(name))
        self.assertEqual(headers.getRawHeaders(b"x-kept"), [b"2"])

    def test_authorization_and_repeats_as_sent(self) -> None:
        client = Headers({b"Authorization": [b"Bearer abc.def"], b"Accept": [b"a", b"b"]})
        headers = upstream(client)
        self.assertEqual(headers.getRawHeaders(b"authorization"), [b"Bearer abc.def"])
        self.assertEqual(headers.getRawHeaders(b"accept"), [b"a", b"b"])

    def test_framing_and_host_replaced(self) -> None:
        client = Headers({b"Host": [b"shop.example"], b"Content-Length": [b"5"], b"Expect": [b"100-continue"]})
        headers = upstream(client)
        self.assertFalse(headers.hasHeader(b"host"))
        self.assertFalse(headers.hasHeader(b"content-length"))
        self.assertFalse(headers.hasHeader(b"expect"))
        self.assertEqual(headers.getRawHeaders(b"x-forwarded-host"), [b"shop.example"])

    def test_correlation_headers(self) -> None:
        headers = upstream(Headers({b"X-Request-ID": [b"forged"], b"X-Correlation-ID": [b"old"]}))
        self.assertEqual(headers.getRawHeaders(b"x-correlation-id"), [b"req-1"])
        self.assertEqual(headers.getRawHeaders(b"x-request-id"), [b"req-1"])

    def test_forwarded_for_appended(self) -> None:
        self.assertEqual(upstream(Headers()).getRawHeaders(b"x-forwarded-for"), [b"203.0.113.9"])
        headers = upstream(Headers({b"X-Forwarded-For": [b"10.0.0.1, 10.0.0.2"]}))
        self.assertEqual(headers.getRawHeaders(b"x-forwarded-for"), [b"10.0.0.1, 10.0.0.2, 203.0.113.9"])

    def test_forwarded_proto_is_ours(self) -> None:
        headers = upstream(Headers({b"X-Forwarded-Proto": [b"https"], b"X-Forwarded-Host": [b"evil"],
                                    b"Host": [b"gw"]}))
        self.assertEqual(headers.getRawHeaders(b"x-forwarded-proto"), [b"http"])
        self.assertEqual(headers.getRawHeaders(b"x-forwarded-host"), [b"gw"])

    def test_trusted_proxy_passes_proto_and_host_on(self) -> None:
        headers = upstream(
            Headers({b"X-Forwarded-Proto": [b"https"], b"X-Forwarded-Host": [b"shop.example"], b"Host": [b"gw"]}),
            trusted=True,
        )
        self.assertEqual(headers.getRawHeaders(b"x-forwarded-proto"), [b"https"])
        self.assertEqual(headers.getRawHeaders(b"x-forwarded-host"), [b"shop.example"])
        plain = upstream(Headers({b"Host": [b"gw"]}), trusted=True)
        self.assertEqual(plain.getRawHeaders(b"x-forwarded-proto"), [b"http"])


class ClientResponseHeaderTests(SynchronousTestCase):
    """
    L{client_response_headers}.
    """

    def test_set_cookie_stays_several(self) -> None:
        headers = client_response_headers(
            Headers({b"Set-Cookie": [b"a=1; Path=/", b"b=2; HttpOnly"], b"Content-Encoding": [b"gzip"]})
        )
        self.assertEqual(headers.getRawHeaders(b"set-cookie"), [b"a=1; Path=/", b"b=2; HttpOnly"])
        self.assertEqual(headers.getRawHeaders(b"content-encoding"), [b"gzip"])

    def test_hop_by_hop_dropped(self) -> None:
        headers = client_response_headers(
            Headers({b"Connection": [b"close, X-Hop"], b"X-Hop": [b"1"], b"Transfer-Encoding": [b"chunked"],
                     b"Keep-Alive": [b"timeout=5"], b"Content-Length": [b"3"]})
        )
        self.assertEqual(
            sorted(name.lower() for name, _ in headers.getAllRawHeaders()), [b"content-length"]
        )

    def test_cors_fields_dropped(self) -> None:
        headers = client_response_headers(
            Headers({b"Access-Control-Allow-Origin": [b"*"], b"access-control-max-age": [b"9"],
                     b"Access-Control": [b"kept: not a CORS field"], b"Vary": [b"Origin"]})
        )
        self.assertEqual(
            sorted(name.lower() for name, _ in headers.getAllRawHeaders()), [b"access-control", b"vary"]
        )

    def test_merge_vary(self) -> None:
        self.assertEqual(merge_vary([b"Origin"], [b"Accept-Encoding"]), b"Origin, Accept-Encoding")
        self.assertEqual(merge_vary([b"Origin", b"Access-Control-Request-Headers"], [b"origin ,Accept"]),
                         b"Origin, Access-Control-Request-Headers, Accept")
        self.assertEqual(merge_vary([b"Origin"], [b"*"]), b"*")
        self.assertEqual(merge_vary([b"Origin"], [b", ,"]), b"Origin")

    def test_connection_named(self) -> None:
        self.assertEqual(
            connection_named(Headers({b"Connection": [b" Foo ,bar,, ", b"baz"]})),
            frozenset({b"foo", b"bar", b"baz"}),
        )
