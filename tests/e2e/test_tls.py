"""
https upstreams: verified against the platform's CAs plus UPSTREAM_CA_FILE,
never unverified.
"""

from __future__ import annotations

import datetime
import os
from typing import Any, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import crypto
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.ssl import CertificateOptions
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

from tests.e2e.support import fetch, gateway_environment, request, start_gateway
from tests.e2e.upstreams import ScriptedUpstream


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_ca_and_leaf(hostname: str) -> Tuple[bytes, Any, Any]:
    """
    A CA certificate (PEM) and a leaf key and certificate it signed for
    C{hostname}.
    """
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("qeetgw test CA"))
        .issuer_name(_name("qeetgw test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name(hostname))
        .issuer_name(ca.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return ca.public_bytes(serialization.Encoding.PEM), leaf_key, leaf


class TLSUpstreamTests(TestCase):
    """
    The gateway talks to an https upstream on loopback.
    """

    timeout = 60

    def serve_tls(self, certified_for: str) -> Tuple[int, str]:
        ca_pem, key, certificate = make_ca_and_leaf(certified_for)
        options = CertificateOptions(
            privateKey=crypto.PKey.from_cryptography_key(key),
            certificate=crypto.X509.from_cryptography(certificate),
        )
        port = reactor.listenSSL(0, Site(ScriptedUpstream()), options, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        directory = self.mktemp()
        os.makedirs(directory)
        ca_file = os.path.join(directory, "ca.pem")
        with open(ca_file, "wb") as out:
            out.write(ca_pem)
        return port.getHost().port, ca_file

    @inlineCallbacks
    def test_verified_with_the_private_ca(self) -> Any:
        port, ca_file = self.serve_tls("localhost")
        _, gateway = yield start_gateway(
            self, gateway_environment(f"https://localhost:{port}", UPSTREAM_CA_FILE=ca_file)
        )
        response = yield fetch(gateway, request(b"GET", b"/api/v1/users/echo"))
        self.assertEqual(response.code, 200)
        self.assertEqual(response.json()["uri"], "/users/echo")

    @inlineCallbacks
    def test_unknown_ca_is_refused(self) -> Any:
        port, _ = self.serve_tls("localhost")
        _, gateway = yield start_gateway(self, gateway_environment(f"https://localhost:{port}"))
        response = yield fetch(gateway, request(b"GET", b"/api/v1/users/echo"))
        self.assertEqual(response.code, 502)
        self.assertEqual(response.json()["error"]["code"], "SERVICE_UNAVAILABLE")
        self.flushLoggedErrors()

    @inlineCallbacks
    def test_wrong_hostname_is_refused(self) -> Any:
        port, ca_file = self.serve_tls("payments.internal")
        _, gateway = yield start_gateway(
            self, gateway_environment(f"https://localhost:{port}", UPSTREAM_CA_FILE=ca_file)
        )
        response = yield fetch(gateway, request(b"GET", b"/api/v1/users/echo"))
        self.assertEqual(response.code, 502)
        self.flushLoggedErrors()


class TLSTerminationTests(TestCase):
    """
    ``--port ssl:...`` terminates TLS at the gateway.
    """

    timeout = 60

    @inlineCallbacks
    def test_serves_https(self) -> Any:
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
        from twisted.internet.ssl import Certificate, optionsForClientTLS

        from qeetgw.config import load_config
        from qeetgw.process.service import GatewayService
        from qeetgw.site import build_site
        from tests.e2e.support import RawClient, closed_port_url
        from tests.memory import parse_response

        ca_pem, key, certificate = make_ca_and_leaf("localhost")
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        key_file = os.path.join(directory, "key.pem")
        cert_file = os.path.join(directory, "cert.pem")
        with open(key_file, "wb") as out:
            out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
        with open(cert_file, "wb") as out:
            out.write(certificate.public_bytes(serialization.Encoding.PEM))
        listen = f"ssl:0:interface=127.0.0.1:privateKey={key_file}:certKey={cert_file}"
        config = load_config(gateway_environment(closed_port_url()), {}, {"LISTEN": listen})
        gateway = build_site(config, reactor)
        service = GatewayService(config.listen, gateway.site, gateway.upstreams, 1.0)
        service.startService()
        self.addCleanup(service.stopService)
        port = yield service.listening
        client = RawClient(request(b"GET", b"/health"))
        endpoint = wrapClientTLS(
            optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(ca_pem)),
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port),
        )
        yield connectProtocol(endpoint, client)
        raw, _ = yield client.done
        response = parse_response(raw)[0]
        self.assertEqual((response.code, response.json()["status"]), (200, "ok"))
