"""
Tests for L{qeetgw.clientaddr}: Express's trust proxy rules.
"""

from ipaddress import ip_network

from twisted.trial.unittest import SynchronousTestCase

from qeetgw.clientaddr import forwarded_chain, is_trusted, resolve_client
from qeetgw.config import TrustProxy

XFF = [b"198.51.100.7, 10.0.0.5", b"10.0.0.6"]


class ResolveClientTests(SynchronousTestCase):
    """
    L{resolve_client} picks the address Express's req.ip would.
    """

    def test_nobody_trusted_is_the_peer(self) -> None:
        self.assertEqual(resolve_client("10.0.0.9", XFF, TrustProxy()), "10.0.0.9")

    def test_true_is_the_leftmost_entry(self) -> None:
        self.assertEqual(resolve_client("10.0.0.9", XFF, TrustProxy(mode="all")), "198.51.100.7")

    def test_hop_counts(self) -> None:
        expected = {1: "10.0.0.6", 2: "10.0.0.5", 3: "198.51.100.7", 9: "198.51.100.7"}
        for hops, address in expected.items():
            with self.subTest(hops=hops):
                self.assertEqual(resolve_client("10.0.0.9", XFF, TrustProxy(mode="hops", hops=hops)), address)

    def test_cidrs_stop_at_the_first_untrusted(self) -> None:
        trust = TrustProxy(mode="cidrs", networks=(ip_network("10.0.0.0/8"),))
        self.assertEqual(resolve_client("10.0.0.9", XFF, trust), "198.51.100.7")
        # an untrusted peer is the client, whatever it claims
        self.assertEqual(resolve_client("203.0.113.1", XFF, trust), "203.0.113.1")
        # a forged entry left of an untrusted hop is ignored
        spoofed = [b"1.2.3.4, 203.0.113.50"]
        self.assertEqual(resolve_client("10.0.0.9", spoofed, trust), "203.0.113.50")

    def test_no_header_is_the_peer(self) -> None:
        self.assertEqual(resolve_client("10.0.0.9", [], TrustProxy(mode="all")), "10.0.0.9")

    def test_mapped_ipv6_peer_matches_ipv4_cidr(self) -> None:
        trust = TrustProxy(mode="cidrs", networks=(ip_network("10.0.0.0/8"),))
        self.assertTrue(is_trusted("::ffff:10.1.2.3", 0, trust))
        self.assertFalse(is_trusted("not-an-ip", 0, trust))

    def test_chain_order(self) -> None:
        self.assertEqual(forwarded_chain("p", XFF), ["p", "10.0.0.6", "10.0.0.5", "198.51.100.7"])
