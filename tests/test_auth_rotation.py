"""
Tests for a JWT key rotation (JWT_PREVIOUS_SECRETS), in memory: the
verifier tries the current key first and then the previous ones in order,
and says which key verified a token (cache hits included); the JWT guard
counts that key in C{qeetgw_jwt_verified_total} and puts it in the access
event; RATE_LIMIT_KEY=user works with a previous key's tokens; the start-up
log says how each previous secret was read, never the key.

Every token is minted here with pyjwt, never with the code under test.
"""

from __future__ import annotations

import base64
import os
from typing import Any, Dict, List

from twisted.internet.address import IPv4Address
from twisted.logger import Logger, LogEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

import qeetgw.logging
from qeetgw.auth import verifier as verifier_module
from qeetgw.auth.keys import HMACKeySource, LabelledKey
from qeetgw.auth.verifier import TokenVerifier
from qeetgw.groupmetrics import GroupMetrics
from qeetgw.logging import access_line, event_as_json
from qeetgw.metricfiles import MetricDirectory, MetricFiles
from qeetgw.metrics import Metrics
from tests.gateway import MemoryGateway, token
from tests.memory import get
from tests.test_auth import SpyPyJWT, VerifierTestCase, hs_token, make_clock, make_config
from tests.test_groupmetrics import scrape as scrape_group
from tests.test_metrics import scrape, value

#: The key rotated to (JWT_SECRET): 40 bytes, given as base64.
NEW_KEY = bytes(range(40))
NEW_SECRET = base64.b64encode(NEW_KEY).decode("ascii")

#: The key rotated from (previous-1): raw text, 38 bytes.
OLD_SECRET = "the-old-secret-of-the-auth-service-123"
OLD_KEY = OLD_SECRET.encode("utf-8")

#: An older one still (previous-2): 64 bytes, given as unpadded base64.
OLDER_KEY = bytes(range(64, 128))
OLDER_SECRET = base64.b64encode(OLDER_KEY).decode("ascii").rstrip("=")

#: A key no gateway knows.
STRANGER_KEY = b"s" * 40

ROTATION = {
    "JWT_SECRET": NEW_SECRET,
    "JWT_PREVIOUS_SECRETS": f"{OLD_SECRET}, {OLDER_SECRET}\n",
}


class RotationVerifierTests(VerifierTestCase):
    """
    L{TokenVerifier} with JWT_PREVIOUS_SECRETS.
    """

    def setUp(self) -> None:
        self.spy = SpyPyJWT()
        self.patch(verifier_module, "_PYJWT", self.spy)

    def test_labels_of_the_configured_keys(self) -> None:
        self.assertEqual(
            self.verifier(**ROTATION).key_labels, ("current", "previous-1", "previous-2")
        )
        self.assertEqual(self.verifier().key_labels, ("current",))

    def test_current_key_costs_one_check(self) -> None:
        """
        A token the current key signed is checked once, however many
        previous keys there are.
        """
        identity = self.accepted(self.verifier(**ROTATION), hs_token(NEW_KEY))
        self.assertEqual((identity.key_label, identity.user_id), ("current", "42"))
        self.assertEqual(self.spy.calls, 1)

    def test_previous_text_key(self) -> None:
        identity = self.accepted(self.verifier(**ROTATION), hs_token(OLD_KEY))
        self.assertEqual((identity.key_label, identity.subject), ("previous-1", "ada@example.com"))
        self.assertEqual(self.spy.calls, 2)

    def test_previous_base64_key_in_list_order(self) -> None:
        identity = self.accepted(self.verifier(**ROTATION), hs_token(OLDER_KEY))
        self.assertEqual(identity.key_label, "previous-2")
        self.assertEqual(self.spy.calls, 3)

    def test_labels_follow_the_list_order(self) -> None:
        verifier = self.verifier(
            JWT_SECRET=NEW_SECRET, JWT_PREVIOUS_SECRETS=f"{OLDER_SECRET},{OLD_SECRET}"
        )
        self.assertEqual(self.accepted(verifier, hs_token(OLDER_KEY)).key_label, "previous-1")
        self.assertEqual(self.accepted(verifier, hs_token(OLD_KEY)).key_label, "previous-2")

    def test_text_reading_of_a_base64_secret_with_raw_encoding(self) -> None:
        """
        JWT_SECRET_ENCODING=raw applies to the previous secrets too: the
        key is the base64 text's bytes, not its decoding.
        """
        verifier = self.verifier(
            JWT_SECRET=OLD_SECRET + "-new",
            JWT_SECRET_ENCODING="raw",
            JWT_PREVIOUS_SECRETS=NEW_SECRET,
        )
        as_text = NEW_SECRET.encode("ascii")
        self.assertEqual(self.accepted(verifier, hs_token(as_text)).key_label, "previous-1")
        self.assertEqual(self.rejected(verifier, hs_token(NEW_KEY)), "bad signature")

    def test_unknown_key_is_a_bad_signature(self) -> None:
        verifier = self.verifier(**ROTATION)
        self.assertEqual(self.rejected(verifier, hs_token(STRANGER_KEY)), "bad signature")
        self.assertEqual((self.spy.calls, verifier.cached_tokens), (3, 0))

    def test_cache_hit_reports_the_same_key(self) -> None:
        verifier = self.verifier(**ROTATION)
        old, new = hs_token(OLD_KEY), hs_token(NEW_KEY)
        first_old, first_new = self.accepted(verifier, old), self.accepted(verifier, new)
        calls = self.spy.calls
        again_old, again_new = self.accepted(verifier, old), self.accepted(verifier, new)
        self.assertEqual(self.spy.calls, calls)  # both were cache hits
        self.assertEqual(
            (again_old.key_label, again_new.key_label), ("previous-1", "current")
        )
        self.assertEqual((again_old, again_new), (first_old, first_new))

    def test_claims_are_checked_for_a_previous_key_too(self) -> None:
        verifier = self.verifier(**ROTATION)
        self.assertEqual(self.rejected(verifier, hs_token(OLD_KEY, exp=int(1e9))), "expired")
        self.assertEqual(
            self.rejected(verifier, hs_token(OLD_KEY, tokenType="refresh")), "refresh token"
        )

    def test_previous_key_allows_the_algorithms_its_length_allows(self) -> None:
        """
        The 64-byte previous-2 key verifies HS512 although the 40-byte
        current key cannot; an HS512 token signed with previous-1 (38
        bytes, HS256 only) is not tried with it.
        """
        verifier = self.verifier(**ROTATION)
        self.assertEqual(
            self.accepted(verifier, hs_token(OLDER_KEY, "HS512")).key_label, "previous-2"
        )
        calls = self.spy.calls
        self.assertEqual(self.rejected(verifier, hs_token(OLD_KEY * 2, "HS512")), "bad signature")
        self.assertEqual(self.spy.calls - calls, 1)

    def test_algorithm_no_key_allows_is_refused(self) -> None:
        verifier = self.verifier(JWT_SECRET=NEW_SECRET, JWT_PREVIOUS_SECRETS=OLD_SECRET)
        self.assertEqual(
            self.rejected(verifier, hs_token(b"x" * 64, "HS512")), "algorithm not allowed"
        )


class HMACKeySourceTests(SynchronousTestCase):
    """
    L{HMACKeySource} with previous keys: per algorithm, the keys long
    enough for it, the current one first.
    """

    def test_keys_per_algorithm(self) -> None:
        source = HMACKeySource(b"c" * 32, ["HS256", "HS384", "HS512"], [b"p" * 64, b"q" * 48])
        self.assertEqual(source.algorithms, frozenset({"HS256", "HS384", "HS512"}))
        self.assertEqual(
            [key.label for key in source.keys_for("HS256", None)],
            ["current", "previous-1", "previous-2"],
        )
        self.assertEqual(
            [key.label for key in source.keys_for("HS384", "any kid")],
            ["previous-1", "previous-2"],
        )
        self.assertEqual(source.keys_for("HS512", None), (LabelledKey("previous-1", b"p" * 64),))
        self.assertEqual(source.key_labels, ("current", "previous-1", "previous-2"))

    def test_short_previous_key_is_refused(self) -> None:
        self.assertRaises(ValueError, HMACKeySource, b"c" * 32, ["HS256"], [b"p" * 31])

    def test_a_key_no_allowed_algorithm_fits_has_no_label(self) -> None:
        source = HMACKeySource(b"c" * 64, ["HS512"], [b"p" * 32])
        self.assertEqual(source.key_labels, ("current",))

    def test_repr_never_shows_a_key(self) -> None:
        self.assertNotIn("ppp", repr(LabelledKey("previous-1", b"p" * 32)))


def bearer(key: bytes) -> bytes:
    """
    An Authorization header with a token signed with C{key}.
    """
    return b"Authorization: Bearer " + token(key=key).encode("ascii") + b"\r\n"


class GuardTests(SynchronousTestCase):
    """
    The gateway in memory: the metric, the access event's C{jwt_key} and
    the rate limit by user, with a rotation under way.
    """

    def setUp(self) -> None:
        self.events: List[Dict[str, Any]] = []
        # Straight to a list: trial's observer adds fields to global events.
        self.patch(
            qeetgw.logging,
            "access_log",
            Logger(namespace="qeetgw.access", observer=self.events.append),
        )

    def gateway(self, **env: str) -> MemoryGateway:
        return MemoryGateway({**ROTATION, "METRICS_PORT": "tcp:0", **env})

    def verified(self, memory: MemoryGateway, label: str) -> Any:
        metrics = memory.gateway.metrics
        assert metrics is not None
        return value(scrape(metrics), "qeetgw_jwt_verified_total", key=label)

    def test_every_key_is_scraped_at_zero_from_the_start(self) -> None:
        memory = self.gateway()
        self.assertEqual(
            [self.verified(memory, label) for label in ("current", "previous-1", "previous-2")],
            [0, 0, 0],
        )

    def test_counted_once_per_request_by_key_cache_hits_included(self) -> None:
        memory = self.gateway()
        statuses = [
            memory.send(get(b"/api/v1/orders", bearer(key))).code
            for key in (OLD_KEY, OLD_KEY, NEW_KEY, OLDER_KEY, STRANGER_KEY)
        ]
        self.assertEqual(statuses, [200, 200, 200, 200, 401])
        self.assertEqual(
            [self.verified(memory, label) for label in ("current", "previous-1", "previous-2")],
            [1, 2, 1],
        )
        metrics = memory.gateway.metrics
        assert metrics is not None
        self.assertEqual(
            value(scrape(metrics), "qeetgw_auth_failures_total", reason="bad_signature"), 1
        )
        # The second old token was a cache hit: old 2 checks, new 1, older 3, stranger 3.
        self.assertEqual(memory.gateway.verifier.signature_checks, 9)

    def test_access_event_carries_the_key_label(self) -> None:
        memory = self.gateway()
        memory.send(get(b"/api/v1/orders", bearer(OLD_KEY)))
        memory.send(get(b"/api/v1/orders", bearer(OLD_KEY)))
        memory.send(get(b"/api/v1/orders", bearer(NEW_KEY)))
        memory.send(get(b"/api/v1/orders", bearer(STRANGER_KEY)))
        memory.send(get(b"/api/v1/orders"))
        memory.send(get(b"/health"))
        self.assertEqual(
            [(event["status"], event["jwt_key"]) for event in self.events],
            [(200, "previous-1"), (200, "previous-1"), (200, "current"),
             (401, None), (401, None), (200, None)],
        )
        for event in self.events:
            # The fast JSON line and the general encoder agree on the field.
            line = access_line(event)
            self.assertIsNotNone(line)
            self.assertIn('"jwt_key": ', line or "")
            self.assertEqual(event_as_json(event)["jwt_key"], event["jwt_key"])
        self.assertIn("jwt_key=previous-1", qeetgw.logging._message(self.events[0]))

    def test_token_without_require_auth_is_still_labelled(self) -> None:
        memory = self.gateway(REQUIRE_AUTH="false")
        self.assertEqual(memory.send(get(b"/api/v1/orders", bearer(OLD_KEY))).code, 200)
        self.assertEqual([event["jwt_key"] for event in self.events], ["previous-1"])
        self.assertEqual(self.verified(memory, "previous-1"), 1)

    def test_rate_limit_by_user_with_a_previous_key(self) -> None:
        """
        RATE_LIMIT_KEY=user: a token signed with a previous key names its
        user, whose budget is the same whichever key signed the token.
        """
        memory = self.gateway(RATE_LIMIT_KEY="user", RATE_LIMIT_MAX="2")
        elsewhere = IPv4Address("TCP", "198.51.100.7", 40000)
        self.assertEqual(memory.send(get(b"/api/v1/orders", bearer(OLD_KEY))).code, 200)
        # The same user from another address, with a token of the new key.
        self.assertEqual(memory.send(get(b"/api/v1/orders", bearer(NEW_KEY)), elsewhere).code, 200)
        refused = memory.send(get(b"/api/v1/orders", bearer(OLD_KEY)), elsewhere)
        self.assertEqual(refused.code, 429)
        # Another user with the old key has a budget of its own.
        bob = b"Authorization: Bearer " + token(
            {"sub": "bob@example.com"}, key=OLD_KEY
        ).encode("ascii") + b"\r\n"
        self.assertEqual(memory.send(get(b"/api/v1/orders", bob)).code, 200)
        # Only the requests the guard saw are counted (not the 429).
        self.assertEqual(
            (self.verified(memory, "previous-1"), self.verified(memory, "current")), (2, 1)
        )


class StartUpLogTests(SynchronousTestCase):
    """
    The start-up log says how each previous secret was read, never the key.
    """

    def test_each_previous_key_is_described(self) -> None:
        events: List[LogEvent] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        MemoryGateway(ROTATION)
        described = [
            (event["key_label"], event["reading"], event["key_bytes"])
            for event in events
            if "JWT_PREVIOUS_SECRETS" in (event.get("log_format") or "")
        ]
        self.assertEqual(described, [("previous-1", "text", 38), ("previous-2", "base64", 64)])
        text = "\n".join(repr(event_as_json(event)) for event in events)
        for secret in (NEW_SECRET, OLD_SECRET, OLDER_SECRET, "the-old-secret"):
            self.assertNotIn(secret, text)


class WorkerFilesTests(TestCase):
    """
    With workers, each worker's series exist in its metric files from the
    start, and the supervisor's scrape sums them.
    """

    def test_two_workers_summed_by_key(self) -> None:
        path = self.mktemp()
        os.makedirs(path)
        directory = MetricDirectory(path)
        group = GroupMetrics(directory, dict, process=False)
        workers = []
        for pid, index in ((201, "0"), (202, "1")):
            files = MetricFiles(path, str(pid), index)
            self.addCleanup(files.close)
            workers.append(
                MemoryGateway(
                    {**ROTATION, "HEALTH_CHECK_INTERVAL_MS": "0"}, metrics=Metrics(files=files)
                )
            )
        samples = scrape_group(group)
        for label in ("current", "previous-1", "previous-2"):
            self.assertEqual(
                value(samples, "qeetgw_jwt_verified_total", key=label), 0, label
            )
        workers[0].send(get(b"/api/v1/orders", bearer(OLD_KEY)))
        workers[1].send(get(b"/api/v1/orders", bearer(OLD_KEY)))
        workers[1].send(get(b"/api/v1/orders", bearer(NEW_KEY)))
        samples = scrape_group(group)
        self.assertEqual(
            [value(samples, "qeetgw_jwt_verified_total", key=label)
             for label in ("current", "previous-1", "previous-2")],
            [1, 2, 0],
        )


class NoRotationTests(SynchronousTestCase):
    """
    Without JWT_PREVIOUS_SECRETS nothing changes but the label.
    """

    def test_current_only(self) -> None:
        clock = make_clock()
        verifier = TokenVerifier(make_config(), clock)
        self.assertEqual(verifier.key_labels, ("current",))
        self.assertEqual(
            self.successResultOf(verifier.verify(hs_token())).key_label, "current"
        )
