"""
Tests for a JWT key rotation (JWT_PREVIOUS_SECRETS), in memory: the
verifier tries the current key first and then the previous ones in order,
and says which key verified a token (cache hits included).

Every token is minted here with pyjwt, never with the code under test.
"""

from __future__ import annotations

import base64

from twisted.trial.unittest import SynchronousTestCase

from qeetgw.auth import verifier as verifier_module
from qeetgw.auth.keys import HMACKeySource, LabelledKey
from qeetgw.auth.verifier import TokenVerifier
from tests.test_auth import SpyPyJWT, VerifierTestCase, hs_token, make_clock, make_config

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
