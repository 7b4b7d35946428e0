"""
TLS for https upstreams: always verified (chain and hostname, through
pyOpenSSL and service-identity), with an optional extra CA file for a
private PKI.  There is deliberately no way to turn verification off.
"""

from __future__ import annotations

from typing import List, Optional

from OpenSSL import SSL, crypto
from twisted.internet.ssl import platformTrust
from twisted.web.client import BrowserLikePolicyForHTTPS
from twisted.web.iweb import IPolicyForHTTPS

from qeetgw.twistedcompat import TrustRoot


def load_pem_certificates(path: str) -> List[crypto.X509]:
    """
    Every certificate in the PEM file at C{path}.

    @raise ValueError: when the file holds none.
    """
    from cryptography import x509

    with open(path, "rb") as pem:
        data = pem.read()
    certificates = x509.load_pem_x509_certificates(data)
    return [crypto.X509.from_cryptography(certificate) for certificate in certificates]


class PlatformTrustPlus(TrustRoot):
    """
    The platform's trusted CAs plus C{extra} ones: adding a private CA must
    not stop public upstreams from verifying.
    """

    def __init__(self, extra: List[crypto.X509]) -> None:
        self._extra = extra

    def add_ca_certificates(self, context: SSL.Context) -> None:
        """
        Load the platform's CAs, then ours, into C{context}.
        """
        context.set_default_verify_paths()
        store = context.get_cert_store()
        assert store is not None
        for certificate in self._extra:
            store.add_cert(certificate)


def upstream_tls_policy(ca_file: Optional[str]) -> IPolicyForHTTPS:
    """
    The TLS policy for connections to https upstreams: browser-like
    verification against the platform's CAs, and C{ca_file}'s when given.
    """
    if ca_file is None:
        return BrowserLikePolicyForHTTPS(platformTrust())
    return BrowserLikePolicyForHTTPS(PlatformTrustPlus(load_pem_certificates(ca_file)))
