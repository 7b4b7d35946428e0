"""
Tests for L{qeetgw.site}: start-up advice, the CORS policy it derives, and
how the gateway it builds keys with JWT_SECRET (and says so at start-up).
"""

import base64
from typing import List

from twisted.logger import LogEvent, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from qeetgw.config import load_config
from qeetgw.site import cors_policy, startup_warnings
from tests.gateway import SECRET, MemoryGateway, token
from tests.memory import get


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


#: Issue 11's secret: a 32-byte key as 43 characters of unpadded base64,
#: with the newline a Kubernetes secret ends with.
ISSUE_11_KEY = bytes(range(100, 132))
ISSUE_11_SECRET = base64.b64encode(ISSUE_11_KEY).decode().rstrip("=") + "\n"


def key_events(events: List[LogEvent]) -> List[LogEvent]:
    """
    The start-up events about JWT_SECRET's key among C{events}.
    """
    return [event for event in events if "key_bytes" in event]


class HMACKeyStartupTests(SynchronousTestCase):
    """
    The gateway keys as the auth-service does (jjwt's reading of
    JWT_SECRET), and says at start-up how it read the secret, never what
    the key is.
    """

    def test_unpadded_secret_with_a_newline_keys_as_jjwt_does(self) -> None:
        """
        A token signed (by pyjwt) with the 32 bytes jjwt decodes the secret
        to goes through the guard to the service; one signed with the
        secret's text is refused.
        """
        gateway = MemoryGateway({"JWT_SECRET": ISSUE_11_SECRET})
        auth = b"Authorization: Bearer " + token(key=ISSUE_11_KEY).encode() + b"\r\n"
        self.assertEqual(gateway.send(get(b"/api/v1/users/me", auth)).code, 200)
        self.assertEqual(len(gateway.upstream.seen), 1)
        text_signed = token(key=ISSUE_11_SECRET.encode())
        refused = gateway.send(
            get(b"/api/v1/users/me", b"Authorization: Bearer " + text_signed.encode() + b"\r\n")
        )
        self.assertEqual(refused.code, 401)
        self.assertEqual(len(gateway.upstream.seen), 1)

    def test_base64_reading_is_logged_without_the_key(self) -> None:
        with capturedLogs() as events:
            MemoryGateway({"JWT_SECRET": ISSUE_11_SECRET})
        [event] = key_events(events)
        self.assertEqual(
            (event["reading"], event["key_bytes"], event["encoding"]), ("base64", 32, "auto")
        )
        self.assertEqual(event["log_level"].name, "info")
        text = formatEvent(event) + repr(event)
        self.assertIn("JWT_SECRET read as base64: a 32-byte HMAC key", text)
        for shown in [
            ISSUE_11_SECRET.strip(),
            ISSUE_11_SECRET[:8],
            ISSUE_11_KEY.hex()[:8],
            repr(ISSUE_11_KEY)[:12],
        ]:
            self.assertNotIn(shown, text)

    def test_text_reading_is_logged_without_the_secret(self) -> None:
        secret = "a text secret, with spaces inside: 42 bytes"
        with capturedLogs() as events:
            MemoryGateway({"JWT_SECRET": secret})
        [event] = key_events(events)
        self.assertEqual((event["reading"], event["key_bytes"]), ("text", len(secret)))
        text = formatEvent(event) + repr(event)
        self.assertNotIn("text secret", text)

    def test_no_secret_no_event(self) -> None:
        with capturedLogs() as events:
            MemoryGateway({"JWT_SECRET": "", "REQUIRE_AUTH": "false"})
        self.assertEqual(key_events(events), [])
