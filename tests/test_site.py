"""
Tests for L{qeetgw.site}: start-up advice and the CORS policy it derives.
"""

from twisted.trial.unittest import SynchronousTestCase

from qeetgw.config import load_config
from qeetgw.site import cors_policy, startup_warnings

from tests.gateway import SECRET


class SiteTests(SynchronousTestCase):
    """
    What the site builder decides from the configuration.
    """

    def test_star_turns_credentials_off_with_a_warning(self) -> None:
        config = load_config({"JWT_SECRET": SECRET, "CORS_ORIGINS": "*", "CORS_CREDENTIALS": "true"})
        policy = cors_policy(config)
        self.assertTrue(policy.any_origin)
        self.assertFalse(policy.credentials)
        self.assertTrue([line for line in startup_warnings(config) if "CORS_CREDENTIALS" in line])

    def test_trust_proxy_true_warns(self) -> None:
        config = load_config({"JWT_SECRET": SECRET, "TRUST_PROXY": "true"})
        self.assertTrue([line for line in startup_warnings(config) if "TRUST_PROXY" in line])
        quiet = load_config({"JWT_SECRET": SECRET, "TRUST_PROXY": "2"})
        self.assertEqual(startup_warnings(quiet), [])

    def test_cors_origin_alias(self) -> None:
        config = load_config({"JWT_SECRET": SECRET, "CORS_ORIGIN": "https://shop.example"})
        self.assertEqual(cors_policy(config).origins, ("https://shop.example",))
