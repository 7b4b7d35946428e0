"""
Tests for L{qeetgw.auth}: key derivation, algorithms, claims, key confusion,
the token cache and the JWKS key source.

Every token is minted here, with pyjwt or by hand with C{hmac}, never with
the code under test; time is a L{task.Clock}.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import operator
from typing import Any, Callable, Dict, List, Mapping, Optional, cast

import attrs
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from qeetgw.auth import jwks
from qeetgw.auth import verifier as verifier_module
from qeetgw.auth.claims import ClaimPolicy, Identity, TokenRejected, algorithm_for_key, check_claims
from qeetgw.auth.jwks import JWKS_MAX_AGE_S
from qeetgw.auth.keys import HMACKeySource
from qeetgw.auth.verifier import TokenCache, TokenVerifier
from qeetgw.config import Config, derive_hmac_key, load_config

#: The clock's time when each test starts: a plausible epoch second.
NOW = 1_800_000_000.0

ISSUER = "http://localhost:4001"

#: A raw-text secret (its "-" make it not base64), 38 bytes: HS256.
SECRET = "test-secret-for-the-gateway-0123456789"
KEY = SECRET.encode("utf-8")

JWKS_URL = "http://auth.test/.well-known/jwks.json"

# Asymmetric keys are slow to make: once for the module.
RSA_A = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_B = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_C = ec.generate_private_key(ec.SECP256R1())


def claims(**changes: Any) -> Dict[str, Any]:
    """
    The claims of an access token as the auth-service issues it at L{NOW},
    with C{changes}; a change to L{None} removes the claim.
    """
    base: Dict[str, Any] = {
        "sub": "ada@example.com",
        "userId": 42,
        "role": "USER",
        "tokenType": "access",
        "iss": ISSUER,
        "iat": int(NOW),
        "exp": int(NOW) + 900,
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def hs_token(key: bytes = KEY, algorithm: str = "HS256", **changes: Any) -> str:
    """
    An HMAC token signed with C{key}, minted by pyjwt.
    """
    return jwt.encode(claims(**changes), key, algorithm=algorithm)


def b64url(data: bytes) -> str:
    """
    Unpadded base64url, as JWS segments are written.
    """
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def hand_token(
    header: Mapping[str, Any],
    payload: Mapping[str, Any],
    key: Optional[bytes],
    digest: Callable[..., Any] = hashlib.sha256,
) -> str:
    """
    A token built by hand: pyjwt refuses to mint some of the tokens an
    attacker would (alg none, an HMAC keyed with a public key).  C{key}
    L{None} gives an empty signature.
    """
    signing_input = ".".join(
        b64url(json.dumps(part).encode("utf-8")) for part in (header, payload)
    )
    signature = b""
    if key is not None:
        signature = hmac.new(key, signing_input.encode("ascii"), digest).digest()
    return signing_input + "." + b64url(signature)


def make_config(**environ: str) -> Config:
    """
    The configuration C{environ} gives, with L{SECRET} unless it says
    otherwise.
    """
    return load_config({"JWT_SECRET": SECRET, **environ})


def make_clock() -> Clock:
    """
    A clock at L{NOW}.
    """
    clock = Clock()
    clock.advance(NOW)
    return clock


class VerifierTestCase(SynchronousTestCase):
    """
    Helpers to verify a token synchronously and read the outcome.
    """

    def verifier(self, clock: Optional[Clock] = None, **environ: str) -> TokenVerifier:
        """
        A verifier of L{make_config}C{(**environ)}, on C{clock} (a fresh one
        at L{NOW} by default, kept as C{self.clock}).
        """
        self.clock = clock or make_clock()
        return TokenVerifier(make_config(**environ), self.clock)

    def accepted(self, verifier: TokenVerifier, token: str) -> Identity:
        """
        The identity C{verifier} accepts C{token} as, at once.
        """
        return self.successResultOf(verifier.verify(token))

    def rejected(self, verifier: TokenVerifier, token: str) -> str:
        """
        The reason C{verifier} refuses C{token} for, at once.
        """
        return self.reason_of(verifier.verify(token))

    def reason_of(self, result: "Deferred[Identity]") -> str:
        """
        The reason C{result} has failed with.
        """
        return str(self.failureResultOf(result, TokenRejected).value.reason)


class KeyDerivationTests(SynchronousTestCase):
    """
    JWT_SECRET becomes the key as the auth-service makes it.
    """

    def test_base64_is_decoded(self) -> None:
        key = bytes(range(40))
        self.assertEqual(derive_hmac_key(base64.b64encode(key).decode()), key)

    def test_text_is_its_utf8_bytes(self) -> None:
        self.assertEqual(derive_hmac_key("clé-secrète"), "clé-secrète".encode("utf-8"))

    def test_missing_padding_is_still_base64(self) -> None:
        """
        jjwt's decoder needs no padding: the 54 characters of 40 bytes
        without their "==" are those 40 bytes.
        """
        secret = base64.b64encode(bytes(range(40))).decode().rstrip("=")
        self.assertEqual(len(secret), 54)
        self.assertEqual(derive_hmac_key(secret), bytes(range(40)))

    def test_url_safe_alphabet_is_text(self) -> None:
        """
        jjwt's Decoders.BASE64 refuses - and _, so such a secret is text.
        """
        secret = base64.urlsafe_b64encode(b"\xfb\xff" * 24).decode()
        self.assertIn("_", secret)
        self.assertEqual(derive_hmac_key(secret), secret.encode())

    def test_whitespace_at_the_ends_is_skipped(self) -> None:
        """
        jjwt skips characters outside the alphabet at both ends: the
        newline a Kubernetes secret often ends with changes nothing.
        """
        secret = " " + base64.b64encode(bytes(range(36))).decode() + "\n"
        self.assertEqual(derive_hmac_key(secret), bytes(range(36)))

    def test_whitespace_inside_makes_it_text(self) -> None:
        encoded = base64.b64encode(bytes(range(36))).decode()
        secret = encoded[:24] + " " + encoded[24:]
        self.assertEqual(derive_hmac_key(secret), secret.encode())

    def test_base64_encoding_forces_decoding(self) -> None:
        key = bytes(range(48))
        self.assertEqual(derive_hmac_key(base64.b64encode(key).decode(), "base64"), key)

    def test_base64_encoding_refuses_bad_base64_without_echoing_it(self) -> None:
        error = self.assertRaises(ValueError, derive_hmac_key, "not-base64-secret!", "base64")
        self.assertNotIn("not-base64-secret", str(error))

    def test_raw_encoding_never_decodes(self) -> None:
        secret = base64.b64encode(bytes(range(40))).decode()
        self.assertEqual(derive_hmac_key(secret, "raw"), secret.encode())

    def test_unknown_encoding(self) -> None:
        self.assertRaises(ValueError, derive_hmac_key, SECRET, "hex")

    def test_algorithm_for_key_follows_jjwt(self) -> None:
        for length, algorithm in [
            (32, "HS256"), (47, "HS256"), (48, "HS384"),
            (63, "HS384"), (64, "HS512"), (100, "HS512"),
        ]:
            self.assertEqual(algorithm_for_key(b"k" * length), algorithm, length)

    def test_algorithm_for_short_key_is_refused(self) -> None:
        error = self.assertRaises(ValueError, algorithm_for_key, b"k" * 31)
        self.assertIn("31 bytes", str(error))

    def test_hmac_key_source_refuses_short_key(self) -> None:
        self.assertRaises(ValueError, HMACKeySource, b"k" * 31, ["HS256"])

    def test_hmac_key_source_refuses_asymmetric_algorithms(self) -> None:
        self.assertRaises(ValueError, HMACKeySource, KEY, ["HS256", "RS256"])


class HMACAlgorithmTests(VerifierTestCase):
    """
    Tokens jjwt signs with 32-, 48- and 64-byte keys, given as base64 or as
    text, verify with the algorithm jjwt picks.
    """

    #: Text secrets of each length; "-" keeps them from being base64.
    TEXT = {n: ("text-secret-" * 6)[:n] for n in (32, 48, 64)}

    def check(self, secret: str, key: bytes, algorithm: str) -> None:
        """
        A verifier given C{secret} accepts a token pyjwt signs with C{key}
        and C{algorithm}, synchronously.
        """
        self.assertEqual(algorithm_for_key(key), algorithm)
        verifier = self.verifier(JWT_SECRET=secret)
        result = verifier.verify(hs_token(key, algorithm))
        self.assertTrue(result.called)
        self.assertEqual(self.successResultOf(result).subject, "ada@example.com")

    def test_base64_keys(self) -> None:
        for length, algorithm in [(32, "HS256"), (48, "HS384"), (64, "HS512")]:
            key = bytes(range(100, 100 + length))
            self.check(base64.b64encode(key).decode(), key, algorithm)

    def test_text_keys(self) -> None:
        for length, algorithm in [(32, "HS256"), (48, "HS384"), (64, "HS512")]:
            secret = self.TEXT[length]
            self.check(secret, secret.encode(), algorithm)

    def test_base64_secret_is_not_its_text(self) -> None:
        """
        A secret that is valid base64 keys with its decoding: a token signed
        with its text is refused, as the auth-service would never sign so.
        """
        secret = "s" * 64  # Valid base64: 48 bytes.
        verifier = self.verifier(JWT_SECRET=secret)
        text_signed = hs_token(secret.encode(), "HS384")
        self.assertEqual(self.rejected(verifier, text_signed), "bad signature")
        decoded = base64.b64decode(secret)
        self.accepted(verifier, hs_token(decoded, "HS384"))

    def test_unpadded_base64_secret_with_a_newline_is_its_decoding(self) -> None:
        """
        Issue 11: a 32-byte key written as 43 characters of unpadded base64,
        with the newline a Kubernetes secret ends with.  jjwt skips the
        newline and needs no padding, so the auth-service signs with the 32
        bytes; a token signed so is accepted, one signed with the text is
        not.
        """
        key = bytes(range(200, 232))
        secret = base64.b64encode(key).decode().rstrip("=") + "\n"
        self.assertEqual(len(secret), 44)
        verifier = self.verifier(JWT_SECRET=secret)
        self.accepted(verifier, hs_token(key, "HS256"))
        text_signed = hs_token(secret.encode(), "HS256")
        self.assertEqual(self.rejected(verifier, text_signed), "bad signature")

    def test_url_safe_secret_is_text(self) -> None:
        secret = base64.urlsafe_b64encode(b"\xfb\xff" * 24).decode()
        verifier = self.verifier(JWT_SECRET=secret)
        self.accepted(verifier, hs_token(secret.encode(), "HS512"))

    def test_forced_raw_encoding(self) -> None:
        secret = "s" * 64
        verifier = self.verifier(JWT_SECRET=secret, JWT_SECRET_ENCODING="raw")
        self.accepted(verifier, hs_token(secret.encode(), "HS512"))

    def test_any_allowed_hmac_algorithm_with_a_long_enough_key(self) -> None:
        key = b"k-" * 32  # 64 bytes
        verifier = self.verifier(JWT_SECRET=key.decode())
        for algorithm in ("HS256", "HS384", "HS512"):
            self.accepted(verifier, hs_token(key, algorithm))

    def test_key_too_short_for_the_algorithm_is_refused(self) -> None:
        """
        HS512 needs a 64-byte key, HS384 a 48-byte one (jjwt refuses less);
        pyjwt would only warn.
        """
        verifier = self.verifier()  # 38 bytes: HS256 only
        for algorithm, digest in [("HS384", hashlib.sha384), ("HS512", hashlib.sha512)]:
            token = hand_token({"alg": algorithm}, claims(), KEY, digest)
            self.assertEqual(self.rejected(verifier, token), "algorithm not allowed", algorithm)

    def test_hmac_source_keeps_the_algorithms_the_key_allows(self) -> None:
        for length, algorithms in [
            (32, {"HS256"}), (48, {"HS256", "HS384"}), (64, {"HS256", "HS384", "HS512"}),
        ]:
            source = HMACKeySource(b"k" * length, ["HS256", "HS384", "HS512"])
            self.assertEqual(source.algorithms, algorithms, length)

    def test_algorithm_outside_the_list_is_refused(self) -> None:
        key = b"k-" * 32
        verifier = self.verifier(JWT_SECRET=key.decode(), JWT_ALGORITHMS="HS512")
        self.assertEqual(self.rejected(verifier, hs_token(key, "HS256")), "algorithm not allowed")
        self.accepted(verifier, hs_token(key, "HS512"))


class SignatureTests(VerifierTestCase):
    """
    Only a token signed with the key, by an allowed algorithm, passes.
    """

    def test_wrong_key(self) -> None:
        other = b"another-secret-of-at-least-32-bytes!"
        self.assertEqual(self.rejected(self.verifier(), hs_token(other)), "bad signature")

    def test_tampered_payload(self) -> None:
        header, _, signature = hs_token().split(".")
        forged = b64url(json.dumps(claims(role="ADMIN")).encode())
        self.assertEqual(
            self.rejected(self.verifier(), f"{header}.{forged}.{signature}"), "bad signature"
        )

    def test_alg_none_is_refused(self) -> None:
        verifier = self.verifier()
        for spelling in ("none", "None", "NONE"):
            token = hand_token({"alg": spelling, "typ": "JWT"}, claims(), None)
            self.assertEqual(self.rejected(verifier, token), "algorithm not allowed", spelling)

    def test_alg_none_with_a_signature_is_refused(self) -> None:
        token = hand_token({"alg": "none"}, claims(), KEY)
        self.assertEqual(self.rejected(self.verifier(), token), "algorithm not allowed")

    def test_rs256_token_where_only_hmac_is_configured(self) -> None:
        token = jwt.encode(claims(), RSA_A, algorithm="RS256")
        self.assertEqual(self.rejected(self.verifier(), token), "algorithm not allowed")

    def test_malformed_tokens(self) -> None:
        verifier = self.verifier()
        body = b64url(json.dumps(claims()).encode())
        for token in [
            "",
            "abc",
            "a.b.c",
            "..",
            "é.é.é",
            b64url(b"not json") + "." + body + ".c2ln",
            b64url(b"[1]") + "." + body + ".c2ln",
            hand_token({"alg": 256}, claims(), KEY),
            hand_token({"alg": ["HS256"]}, claims(), KEY),
            hand_token({"alg": "HS256", "kid": 7}, claims(), KEY),
            hand_token({"alg": "HS256"}, claims(), KEY) + ".extra",
        ]:
            self.assertEqual(self.rejected(verifier, token), "malformed token", token)

    def test_payload_must_be_an_object(self) -> None:
        header = b64url(b'{"alg":"HS256","typ":"JWT"}')
        payload = b64url(b'["exp"]')
        signing_input = f"{header}.{payload}"
        signature = b64url(hmac.new(KEY, signing_input.encode(), hashlib.sha256).digest())
        self.assertEqual(
            self.rejected(self.verifier(), f"{signing_input}.{signature}"), "malformed token"
        )

    def test_hmac_kid_is_ignored(self) -> None:
        token = jwt.encode(claims(), KEY, algorithm="HS256", headers={"kid": "whatever"})
        self.accepted(self.verifier(), token)

    def test_unknown_critical_header_is_refused(self) -> None:
        token = hand_token({"alg": "HS256", "crit": ["exp-policy"], "exp-policy": 1}, claims(), KEY)
        self.assertEqual(self.rejected(self.verifier(), token), "malformed token")


class ClaimTests(VerifierTestCase):
    """
    exp, nbf, iat, iss and aud are checked against the injected clock.
    """

    def test_valid_token(self) -> None:
        self.accepted(self.verifier(), hs_token())

    def test_expired(self) -> None:
        self.assertEqual(self.rejected(self.verifier(), hs_token(exp=int(NOW) - 1)), "expired")

    def test_expires_at_the_exact_second(self) -> None:
        self.assertEqual(self.rejected(self.verifier(), hs_token(exp=int(NOW))), "expired")

    def test_expires_as_the_clock_moves(self) -> None:
        clock = make_clock()
        verifier = TokenVerifier(make_config(JWT_CACHE_SIZE="0"), clock)
        token = hs_token(exp=int(NOW) + 60)
        self.accepted(verifier, token)
        clock.advance(59.9)
        self.accepted(verifier, token)
        clock.advance(0.1)
        self.assertEqual(self.rejected(verifier, token), "expired")

    def test_missing_exp(self) -> None:
        self.assertEqual(self.rejected(self.verifier(), hs_token(exp=None)), "missing exp")

    def test_malformed_exp(self) -> None:
        verifier = self.verifier()
        for exp in ["soon", True, [int(NOW) + 60], {"s": 1}]:
            self.assertEqual(self.rejected(verifier, hs_token(exp=exp)), "malformed exp", exp)

    def test_infinite_exp(self) -> None:
        """
        Python's JSON parser reads Infinity; it must not mean forever.
        """
        payload = json.dumps(claims(exp=float("inf")))
        self.assertIn("Infinity", payload)
        token = hand_token({"alg": "HS256"}, json.loads(payload), KEY)
        self.assertEqual(self.rejected(self.verifier(), token), "malformed exp")

    def test_fractional_exp(self) -> None:
        identity = self.accepted(self.verifier(), hs_token(exp=NOW + 0.5))
        self.assertEqual(identity.expires_at, NOW + 0.5)

    def test_not_yet_valid(self) -> None:
        verifier = self.verifier()
        token = hs_token(nbf=int(NOW) + 10)
        self.assertEqual(self.rejected(verifier, token), "not yet valid")
        self.clock.advance(10)
        self.accepted(verifier, token)

    def test_malformed_nbf(self) -> None:
        self.assertEqual(self.rejected(self.verifier(), hs_token(nbf="now")), "malformed nbf")

    def test_issued_in_the_future(self) -> None:
        self.assertEqual(
            self.rejected(self.verifier(), hs_token(iat=int(NOW) + 5)), "issued in the future"
        )

    def test_malformed_iat(self) -> None:
        self.assertEqual(self.rejected(self.verifier(), hs_token(iat="then")), "malformed iat")

    def test_iat_is_optional(self) -> None:
        self.accepted(self.verifier(), hs_token(iat=None))

    def test_leeway(self) -> None:
        verifier = self.verifier(JWT_LEEWAY_S="30", JWT_CACHE_SIZE="0")
        self.accepted(verifier, hs_token(exp=int(NOW) - 29))
        self.assertEqual(self.rejected(verifier, hs_token(exp=int(NOW) - 30)), "expired")
        self.accepted(verifier, hs_token(nbf=int(NOW) + 30))
        self.assertEqual(self.rejected(verifier, hs_token(nbf=int(NOW) + 31)), "not yet valid")
        self.accepted(verifier, hs_token(iat=int(NOW) + 30))
        self.assertEqual(
            self.rejected(verifier, hs_token(iat=int(NOW) + 31)), "issued in the future"
        )

    def test_fractional_leeway(self) -> None:
        verifier = self.verifier(JWT_LEEWAY_S="1.5")
        self.accepted(verifier, hs_token(exp=int(NOW) - 1))
        self.assertEqual(self.rejected(verifier, hs_token(exp=int(NOW) - 2)), "expired")

    def test_wrong_issuer(self) -> None:
        verifier = self.verifier()
        self.assertEqual(self.rejected(verifier, hs_token(iss="http://evil")), "wrong issuer")
        self.assertEqual(self.rejected(verifier, hs_token(iss=ISSUER + "/")), "wrong issuer")
        self.assertEqual(self.rejected(verifier, hs_token(iss=None)), "wrong issuer")

    def test_configured_issuer(self) -> None:
        verifier = self.verifier(JWT_ISSUER="https://auth.example")
        self.accepted(verifier, hs_token(iss="https://auth.example"))
        self.assertEqual(self.rejected(verifier, hs_token()), "wrong issuer")

    def test_audience_string(self) -> None:
        verifier = self.verifier(JWT_AUDIENCE="qeetmart")
        self.accepted(verifier, hs_token(aud="qeetmart"))
        self.assertEqual(self.rejected(verifier, hs_token(aud="other")), "wrong audience")

    def test_audience_list(self) -> None:
        verifier = self.verifier(JWT_AUDIENCE="qeetmart")
        self.accepted(verifier, hs_token(aud=["other", "qeetmart"]))
        self.assertEqual(self.rejected(verifier, hs_token(aud=["a", "b"])), "wrong audience")
        self.assertEqual(self.rejected(verifier, hs_token(aud=[])), "wrong audience")

    def test_missing_audience_when_required(self) -> None:
        self.assertEqual(
            self.rejected(self.verifier(JWT_AUDIENCE="qeetmart"), hs_token()), "wrong audience"
        )

    def test_audience_ignored_when_not_configured(self) -> None:
        self.accepted(self.verifier(), hs_token(aud="anyone"))

    def test_audience_is_not_a_substring_match(self) -> None:
        verifier = self.verifier(JWT_AUDIENCE="qeetmart")
        self.assertEqual(self.rejected(verifier, hs_token(aud="qeetmart-admin")), "wrong audience")


class CheckClaimsTests(SynchronousTestCase):
    """
    L{check_claims} is a pure function of the claims, the time and the
    policy.
    """

    POLICY = ClaimPolicy(issuer=ISSUER)

    def reason(self, claim_set: Mapping[str, Any], now: float = NOW, **policy: Any) -> str:
        error = self.assertRaises(
            TokenRejected, check_claims, claim_set, now, attrs.evolve(self.POLICY, **policy)
        )
        return error.reason

    def test_passes(self) -> None:
        check_claims(claims(), NOW, self.POLICY)

    def test_exp_is_checked_before_the_rest(self) -> None:
        self.assertEqual(self.reason(claims(exp=1, iss="x", tokenType="refresh")), "expired")

    def test_boolean_is_not_a_date(self) -> None:
        self.assertEqual(self.reason(claims(nbf=False)), "malformed nbf")


class TokenTypeTests(VerifierTestCase):
    """
    A refresh token is not an access token.
    """

    def test_refresh_token_is_refused(self) -> None:
        refresh = hs_token(tokenType="refresh", exp=int(NOW) + 7 * 86400)
        self.assertEqual(self.rejected(self.verifier(), refresh), "refresh token")

    def test_other_type_is_refused(self) -> None:
        self.assertEqual(
            self.rejected(self.verifier(), hs_token(tokenType="id")), "wrong token type"
        )

    def test_type_is_case_sensitive(self) -> None:
        self.assertEqual(
            self.rejected(self.verifier(), hs_token(tokenType="ACCESS")), "wrong token type"
        )

    def test_non_string_type_is_refused(self) -> None:
        self.assertEqual(self.rejected(self.verifier(), hs_token(tokenType=1)), "wrong token type")

    def test_absent_type_is_accepted(self) -> None:
        self.accepted(self.verifier(), hs_token(tokenType=None))

    def test_custom_claim_and_value(self) -> None:
        verifier = self.verifier(JWT_TOKEN_TYPE_CLAIM="token_use", JWT_TOKEN_TYPE="access_token")
        self.accepted(verifier, hs_token(tokenType=None, token_use="access_token"))
        self.assertEqual(
            self.rejected(verifier, hs_token(tokenType=None, token_use="refresh")), "refresh token"
        )
        # The default claim is no longer looked at.
        self.accepted(verifier, hs_token(tokenType="refresh"))


class IdentityTests(VerifierTestCase):
    """
    The identity carries what the upstream headers need.
    """

    def test_fields(self) -> None:
        identity = self.accepted(self.verifier(), hs_token())
        self.assertEqual(
            (identity.subject, identity.user_id, identity.role, identity.expires_at),
            ("ada@example.com", "42", "USER", NOW + 900),
        )
        self.assertEqual(identity.claims["tokenType"], "access")
        self.assertEqual(dict(identity.claims), claims())

    def test_claims_are_read_only(self) -> None:
        identity = self.accepted(self.verifier(), hs_token())
        self.assertRaises(TypeError, operator.setitem, identity.claims, "role", "ADMIN")

    def test_user_id_spellings(self) -> None:
        verifier = self.verifier()
        for given, expected in [
            ("u-7", "u-7"), (7.0, "7"), (7.5, None), (True, None), (None, None), ([7], None),
        ]:
            identity = self.accepted(verifier, hs_token(userId=given))
            self.assertEqual(identity.user_id, expected, given)

    def test_values_unfit_for_headers_are_dropped(self) -> None:
        token = hs_token(sub="a@b\r\nX-User-Role: ADMIN", role=["ADMIN"], userId="1\n2")
        identity = self.accepted(self.verifier(), token)
        self.assertEqual((identity.subject, identity.role, identity.user_id), (None, None, None))


class SpyPyJWT:
    """
    Stands for L{jwt.PyJWT}, counting signature checks.
    """

    def __init__(self) -> None:
        self.calls = 0
        self._real = jwt.PyJWT()

    def decode(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self._real.decode(*args, **kwargs)


class CacheTests(VerifierTestCase):
    """
    A token is verified once, then remembered until it expires.
    """

    def test_second_verify_does_not_call_pyjwt(self) -> None:
        spy = SpyPyJWT()
        self.patch(verifier_module, "_PYJWT", spy)
        verifier = self.verifier()
        token = hs_token()
        first = self.accepted(verifier, token)
        second = verifier.verify(token)
        self.assertTrue(second.called)
        self.assertIs(self.successResultOf(second), first)
        self.assertEqual((spy.calls, verifier.signature_checks), (1, 1))

    def test_cached_token_is_refused_after_its_exp(self) -> None:
        verifier = self.verifier()
        token = hs_token(exp=int(NOW) + 60)
        self.accepted(verifier, token)
        self.clock.advance(59)
        self.accepted(verifier, token)
        self.clock.advance(1)
        self.assertEqual(self.rejected(verifier, token), "expired")
        self.assertEqual((verifier.signature_checks, verifier.cached_tokens), (1, 0))

    def test_cache_honours_leeway(self) -> None:
        verifier = self.verifier(JWT_LEEWAY_S="30")
        token = hs_token(exp=int(NOW) + 60)
        self.accepted(verifier, token)
        self.clock.advance(89)
        self.accepted(verifier, token)
        self.clock.advance(1)
        self.assertEqual(self.rejected(verifier, token), "expired")
        self.assertEqual(verifier.signature_checks, 1)

    def test_cache_is_bounded_and_least_recently_used_goes(self) -> None:
        verifier = self.verifier(JWT_CACHE_SIZE="2")
        one, two, three = (hs_token(userId=n) for n in (1, 2, 3))
        self.accepted(verifier, one)
        self.accepted(verifier, two)
        self.accepted(verifier, one)  # one is now the most recently used
        self.accepted(verifier, three)  # two goes
        self.assertEqual((verifier.cached_tokens, verifier.signature_checks), (2, 3))
        self.accepted(verifier, one)
        self.accepted(verifier, three)
        self.assertEqual(verifier.signature_checks, 3)
        self.accepted(verifier, two)
        self.assertEqual((verifier.cached_tokens, verifier.signature_checks), (2, 4))

    def test_size_zero_turns_the_cache_off(self) -> None:
        verifier = self.verifier(JWT_CACHE_SIZE="0")
        token = hs_token()
        self.accepted(verifier, token)
        self.accepted(verifier, token)
        self.assertEqual((verifier.cached_tokens, verifier.signature_checks), (0, 2))

    def test_rejections_are_not_cached(self) -> None:
        verifier = self.verifier()
        token = hs_token(iss="http://evil")
        self.rejected(verifier, token)
        self.rejected(verifier, token)
        self.assertEqual((verifier.cached_tokens, verifier.signature_checks), (0, 2))

    def test_not_yet_valid_token_is_accepted_once_valid(self) -> None:
        verifier = self.verifier()
        token = hs_token(nbf=int(NOW) + 5)
        self.assertEqual(self.rejected(verifier, token), "not yet valid")
        self.assertEqual(verifier.cached_tokens, 0)
        self.clock.advance(5)
        self.accepted(verifier, token)

    def test_clock_set_back_before_nbf_verifies_again(self) -> None:
        cache = TokenCache(10)
        identity = Identity("s", "1", "USER", {}, NOW + 60)
        cache.put("t", identity, NOW - 1, NOW + 60)
        self.assertIs(cache.get("t", NOW), identity)
        self.assertIsNone(cache.get("t", NOW - 2))
        self.assertEqual(len(cache), 0)


# ---------------------------------------------------------------------------
# JWKS
# ---------------------------------------------------------------------------


def jwk(key: Any, key_id: Optional[str], **members: Any) -> Dict[str, Any]:
    """
    The public JWK of the private key C{key}, made by pyjwt, with C{kid}.
    """
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        data: Dict[str, Any] = RSAAlgorithm.to_jwk(public, as_dict=True)
    else:
        data = ECAlgorithm.to_jwk(public, as_dict=True)
    if key_id is not None:
        data["kid"] = key_id
    data.update(members)
    return data


def signed(key: Any, algorithm: str, key_id: Optional[str], **changes: Any) -> str:
    """
    A token signed by pyjwt with the private key C{key}.
    """
    headers = {} if key_id is None else {"kid": key_id}
    return jwt.encode(claims(**changes), key, algorithm=algorithm, headers=headers)


class JWKSResource(Resource):
    """
    A JWKS endpoint whose keys, status and timing the test controls.

    @ivar keys: the JWKs served.
    @ivar body: served instead of the key set when not L{None}.
    @ivar status: the status served.
    @ivar hold: when true, requests wait in C{held} until L{release}.
    @ivar requests: how many requests arrived.
    """

    isLeaf = True

    def __init__(self, keys: List[Any]) -> None:
        super().__init__()
        self.keys = keys
        self.body: Optional[bytes] = None
        self.status = 200
        self.hold = False
        self.held: List[Request] = []
        self.requests = 0

    def _body(self) -> bytes:
        return self.body if self.body is not None else json.dumps({"keys": self.keys}).encode()

    def render_GET(self, request: Request) -> Any:
        self.requests += 1
        request.setResponseCode(self.status)
        request.setHeader(b"content-type", b"application/json")
        if self.hold:
            self.held.append(request)
            return NOT_DONE_YET
        return self._body()

    def release(self) -> None:
        """
        Answer every held request.
        """
        held, self.held = self.held, []
        for request in held:
            request.write(self._body())
            request.finish()


class RefusingClient:
    """
    An HTTP client whose connections are all refused.
    """

    def __init__(self) -> None:
        self.requests = 0

    def get(self, url: str, **kwargs: Any) -> "Deferred[Any]":
        self.requests += 1
        return fail(ConnectionRefusedError())


class JWKSTests(VerifierTestCase):
    """
    Public keys from a JWKS, in memory with StubTreq.
    """

    ENVIRON = {
        "JWT_JWKS_URL": JWKS_URL,
        "JWT_ALGORITHMS": "HS256,RS256,PS256,ES256",
        "JWT_JWKS_REFRESH_MS": "60000",
    }

    def setUp(self) -> None:
        self.server = JWKSResource([jwk(RSA_A, "A"), jwk(EC_C, "C")])
        # StubTreq's methods are set at run time; mypy cannot see them.
        self.stub: Any = StubTreq(self.server)
        self.clock = make_clock()
        self.events: List[LogEvent] = []
        observer = cast(ILogObserver, self.events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def jwks_verifier(
        self, client: Any = None, start: bool = True, **environ: str
    ) -> TokenVerifier:
        """
        A verifier of the JWKS at L{JWKS_URL} (and L{SECRET}), started.
        """
        config = make_config(**{**self.ENVIRON, **environ})
        verifier = TokenVerifier(config, self.clock, jwks_client=client or self.stub)
        if start:
            verifier.startService()
            self.addCleanup(verifier.stopService)
        return verifier

    def logged(self, text: str) -> List[LogEvent]:
        """
        The events logged whose format mentions C{text}.
        """
        return [event for event in self.events if text in (event.get("log_format") or "")]

    def test_start_fetches_the_keys(self) -> None:
        self.jwks_verifier()
        self.assertEqual(self.server.requests, 1)
        [event] = self.logged("Fetched")
        self.assertEqual(
            (event["count"], event["url"], event["key_ids"]), (2, JWKS_URL, ["A", "C"])
        )

    def test_rs256_and_es256_tokens_verify_synchronously(self) -> None:
        verifier = self.jwks_verifier()
        for token in (signed(RSA_A, "RS256", "A"), signed(EC_C, "ES256", "C")):
            result = verifier.verify(token)
            self.assertTrue(result.called)
            self.assertEqual(self.successResultOf(result).user_id, "42")
        self.assertEqual(self.server.requests, 1)

    def test_ps256_with_an_rsa_key_that_names_no_algorithm(self) -> None:
        self.accepted(self.jwks_verifier(), signed(RSA_A, "PS256", "A"))

    def test_key_declaring_its_algorithm_verifies_only_that_one(self) -> None:
        self.server.keys = [jwk(RSA_A, "A", alg="RS256")]
        verifier = self.jwks_verifier()
        self.accepted(verifier, signed(RSA_A, "RS256", "A"))
        self.assertEqual(self.rejected(verifier, signed(RSA_A, "PS256", "A")), "unknown key id")

    def test_hmac_still_verifies_with_the_secret(self) -> None:
        self.accepted(self.jwks_verifier(), hs_token())

    def test_wrong_key_for_the_kid(self) -> None:
        token = signed(RSA_B, "RS256", "A")
        self.assertEqual(self.rejected(self.jwks_verifier(), token), "bad signature")

    def test_weak_rsa_key_is_refused(self) -> None:
        weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        self.server.keys = [jwk(weak, "W")]
        verifier = self.jwks_verifier()
        self.assertEqual(self.rejected(verifier, signed(weak, "RS256", "W")), "key refused")

    def test_algorithm_of_another_key_type(self) -> None:
        """
        An ES256 token naming an RSA key's id finds no key for ES256.
        """
        token = signed(EC_C, "ES256", "A")
        self.assertEqual(self.rejected(self.jwks_verifier(), token), "unknown key id")

    def test_asymmetric_algorithm_outside_the_list(self) -> None:
        token = signed(RSA_A, "RS512", "A")
        self.assertEqual(self.rejected(self.jwks_verifier(), token), "algorithm not allowed")

    def test_claims_are_checked_for_jwks_tokens_too(self) -> None:
        verifier = self.jwks_verifier()
        self.assertEqual(
            self.rejected(verifier, signed(RSA_A, "RS256", "A", tokenType="refresh")),
            "refresh token",
        )
        self.assertEqual(
            self.rejected(verifier, signed(EC_C, "ES256", "C", exp=int(NOW) - 1)), "expired"
        )

    def test_first_token_fetches_when_not_started(self) -> None:
        verifier = self.jwks_verifier(start=False)
        self.assertEqual(self.server.requests, 0)
        self.accepted(verifier, signed(RSA_A, "RS256", "A"))
        self.assertEqual(self.server.requests, 1)

    def test_token_without_kid_uses_the_only_fitting_key(self) -> None:
        verifier = self.jwks_verifier()
        self.accepted(verifier, signed(EC_C, "ES256", None))
        self.accepted(verifier, signed(RSA_A, "RS256", None))

    def test_token_without_kid_is_refused_when_several_keys_fit(self) -> None:
        self.server.keys = [jwk(RSA_A, "A"), jwk(RSA_B, "B")]
        verifier = self.jwks_verifier()
        self.assertEqual(self.rejected(verifier, signed(RSA_A, "RS256", None)), "unknown key id")

    def test_rotation_refetches_once(self) -> None:
        verifier = self.jwks_verifier()
        self.accepted(verifier, signed(RSA_A, "RS256", "A"))
        self.server.keys = [jwk(RSA_A, "A"), jwk(RSA_B, "B")]
        self.clock.advance(60)
        self.accepted(verifier, signed(RSA_B, "RS256", "B"))
        self.assertEqual(self.server.requests, 2)

    def test_unknown_kid_within_the_interval_does_not_refetch(self) -> None:
        verifier = self.jwks_verifier()
        self.server.keys = [jwk(RSA_A, "A"), jwk(RSA_B, "B")]
        self.clock.advance(59)
        result = verifier.verify(signed(RSA_B, "RS256", "B"))
        self.assertEqual(self.reason_of(result), "unknown key id")
        self.assertEqual(self.server.requests, 1)

    def test_second_unknown_kid_waits_for_the_interval(self) -> None:
        verifier = self.jwks_verifier()
        self.clock.advance(60)
        self.assertEqual(self.rejected(verifier, signed(RSA_B, "RS256", "X")), "unknown key id")
        self.assertEqual(self.server.requests, 2)
        self.clock.advance(30)
        self.assertEqual(self.rejected(verifier, signed(RSA_B, "RS256", "Y")), "unknown key id")
        self.assertEqual(self.server.requests, 2)
        self.clock.advance(30)
        self.assertEqual(self.rejected(verifier, signed(RSA_B, "RS256", "Y")), "unknown key id")
        self.assertEqual(self.server.requests, 3)

    def test_refresh_interval_is_configurable(self) -> None:
        verifier = self.jwks_verifier(JWT_JWKS_REFRESH_MS="5000")
        self.server.keys = [jwk(RSA_B, "B")]
        self.clock.advance(5)
        self.accepted(verifier, signed(RSA_B, "RS256", "B"))
        self.assertEqual(self.server.requests, 2)

    def test_concurrent_unknown_kids_share_one_fetch(self) -> None:
        verifier = self.jwks_verifier()
        self.server.keys = [jwk(RSA_A, "A"), jwk(RSA_B, "B")]
        self.server.hold = True
        self.clock.advance(60)
        waiting = [verifier.verify(signed(RSA_B, "RS256", "B", userId=n)) for n in range(3)]
        waiting.append(verifier.verify(signed(RSA_B, "RS256", "unknown")))
        self.assertEqual([result.called for result in waiting], [False] * 4)
        self.assertEqual(self.server.requests, 2)
        # Tokens whose key is known do not wait for the fetch.
        self.accepted(verifier, signed(RSA_A, "RS256", "A"))
        self.server.release()
        self.stub.flush()
        self.assertEqual(
            [self.successResultOf(result).user_id for result in waiting[:3]], ["0", "1", "2"]
        )
        self.assertEqual(
            self.reason_of(waiting[3]), "unknown key id"
        )
        self.assertEqual(self.server.requests, 2)

    def test_fetch_failure_means_keys_unavailable(self) -> None:
        self.server.status = 503
        verifier = self.jwks_verifier()
        self.assertEqual(self.rejected(verifier, signed(RSA_A, "RS256", "A")), "keys unavailable")
        [event] = self.logged("failed")
        self.assertEqual((event["url"], event["error"]), (JWKS_URL, "HTTP 503"))
        # HMAC tokens do not depend on the JWKS.
        self.accepted(verifier, hs_token())
        # Once the interval is over, the next token tries again.
        self.server.status = 200
        self.clock.advance(60)
        self.accepted(verifier, signed(RSA_A, "RS256", "A"))

    def test_failure_while_a_token_waits(self) -> None:
        verifier = self.jwks_verifier(start=False)
        self.server.status = 500
        self.assertEqual(self.rejected(verifier, signed(RSA_A, "RS256", "A")), "keys unavailable")

    def test_refused_connection(self) -> None:
        client = RefusingClient()
        verifier = self.jwks_verifier(client)
        self.assertEqual(self.rejected(verifier, signed(RSA_A, "RS256", "A")), "keys unavailable")
        self.assertEqual(client.requests, 1)
        [event] = self.logged("failed")
        self.assertEqual(event["error"], "connection failed")

    def test_failed_refetch_keeps_the_keys(self) -> None:
        verifier = self.jwks_verifier()
        self.server.status = 500
        self.clock.advance(60)
        self.assertEqual(self.rejected(verifier, signed(RSA_B, "RS256", "B")), "keys unavailable")
        self.accepted(verifier, signed(RSA_A, "RS256", "A"))

    def test_bad_bodies(self) -> None:
        for body, error in [
            (b"<html>", "the body is not JSON"),
            (b'{"kty": "RSA"}', "the body is not a JWK Set (no keys list)"),
            (b'{"keys": []}', "the key set has no usable key"),
            (b"[]", "the body is not a JWK Set (no keys list)"),
        ]:
            self.events.clear()
            self.server.body = body
            verifier = self.jwks_verifier()
            self.assertEqual(
                self.rejected(verifier, signed(RSA_A, "RS256", "A")), "keys unavailable", body
            )
            [event] = self.logged("failed")
            self.assertEqual(event["error"], error, body)
            verifier.stopService()

    def test_timeout(self) -> None:
        self.server.hold = True
        verifier = self.jwks_verifier()
        waiting = verifier.verify(signed(RSA_A, "RS256", "A"))
        self.assertNoResult(waiting)
        self.clock.advance(5)  # GATEWAY_PROXY_TIMEOUT_MS
        self.assertEqual(self.reason_of(waiting), "keys unavailable")
        [event] = self.logged("failed")
        self.assertEqual(event["error"], "timeout after 5000 ms")

    def test_timeout_while_the_body_stalls(self) -> None:
        self.server.hold = True
        verifier = self.jwks_verifier()
        waiting = verifier.verify(signed(RSA_A, "RS256", "A"))
        [held] = self.server.held
        held.write(b'{"keys": [')
        self.stub.flush()
        self.assertNoResult(waiting)
        self.clock.advance(5)
        self.assertEqual(self.reason_of(waiting), "keys unavailable")
        # The rest arriving, or the connection ending, changes nothing.
        held.write(b"]}")
        held.finish()
        self.stub.flush()
        [event] = self.logged("failed")
        self.assertEqual(event["error"], "timeout after 5000 ms")

    def test_body_size_is_bounded(self) -> None:
        self.server.body = b'{"keys": [], "pad": "' + b"x" * (jwks.JWKS_MAX_BYTES + 1) + b'"}'
        verifier = self.jwks_verifier()
        self.assertEqual(self.rejected(verifier, signed(RSA_A, "RS256", "A")), "keys unavailable")

    def test_unusable_keys_are_skipped_and_logged(self) -> None:
        private = jwk(RSA_B, "P")
        private["d"] = "AQAB"
        self.server.keys = [
            {"kty": "oct", "kid": "H", "k": b64url(KEY)},
            private,
            jwk(RSA_B, "E", use="enc"),
            jwk(RSA_B, "O", key_ops=["encrypt"]),
            jwk(RSA_B, "X", alg="RSA-OAEP"),
            {"kty": "RSA", "kid": "bad", "n": "x"},
            "not an object",
            jwk(RSA_A, "A"),
        ]
        verifier = self.jwks_verifier()
        skipped = [event["key_id"] for event in self.logged("Ignoring")]
        self.assertEqual(skipped, ["H", "P", "E", "O", "X", "bad", None])
        self.accepted(verifier, signed(RSA_A, "RS256", "A"))
        for key_id in ("P", "E", "O", "X"):
            self.assertEqual(
                self.rejected(verifier, signed(RSA_B, "RS256", key_id)), "unknown key id"
            )

    def test_keys_of_algorithms_not_allowed_are_skipped(self) -> None:
        verifier = self.jwks_verifier(JWT_ALGORITHMS="ES256")
        self.assertEqual(
            self.rejected(verifier, signed(RSA_A, "RS256", "A")), "algorithm not allowed"
        )
        [event] = self.logged("Ignoring")
        self.assertEqual(event["key_id"], "A")
        self.accepted(verifier, signed(EC_C, "ES256", "C"))

    def test_withdrawn_key_stops_verifying_cached_tokens(self) -> None:
        verifier = self.jwks_verifier()
        token = signed(RSA_A, "RS256", "A", exp=int(NOW) + 3600)
        self.accepted(verifier, token)
        self.server.keys = [jwk(RSA_B, "B")]
        self.clock.advance(JWKS_MAX_AGE_S)
        self.assertEqual(self.server.requests, 2)
        self.assertEqual(verifier.cached_tokens, 0)
        self.assertEqual(self.rejected(verifier, token), "unknown key id")

    def test_unchanged_keys_keep_the_cache(self) -> None:
        verifier = self.jwks_verifier()
        token = signed(RSA_A, "RS256", "A", exp=int(NOW) + 3600)
        self.accepted(verifier, token)
        self.clock.advance(JWKS_MAX_AGE_S)
        self.assertEqual((self.server.requests, verifier.cached_tokens), (2, 1))
        # Only a change is worth an info line.
        levels = [event["log_level"].name for event in self.logged("Fetched")]
        self.assertEqual(levels, ["info", "debug"])

    def test_declared_algorithm_must_fit_the_key(self) -> None:
        self.server.keys = [jwk(EC_C, "C", alg="ES384"), jwk(RSA_A, "A")]
        verifier = self.jwks_verifier(JWT_ALGORITHMS="RS256,ES256,ES384")
        [event] = self.logged("Ignoring")
        self.assertEqual(event["key_id"], "C")
        self.assertEqual(self.rejected(verifier, signed(EC_C, "ES256", "C")), "unknown key id")

    def test_stop_ends_background_fetches(self) -> None:
        verifier = self.jwks_verifier(start=False)
        verifier.startService()
        verifier.stopService()
        self.clock.advance(JWKS_MAX_AGE_S * 3)
        self.assertEqual(self.server.requests, 1)

    def test_stop_cancels_a_fetch_in_flight(self) -> None:
        self.server.hold = True
        verifier = self.jwks_verifier(start=False)
        verifier.startService()
        waiting = verifier.verify(signed(RSA_A, "RS256", "A"))
        verifier.stopService()
        self.assertEqual(self.reason_of(waiting), "keys unavailable")

    def test_cancelled_waiter_does_not_disturb_the_others(self) -> None:
        self.server.hold = True
        verifier = self.jwks_verifier()
        first = verifier.verify(signed(RSA_A, "RS256", "A"))
        second = verifier.verify(signed(RSA_A, "RS256", "A", userId=7))
        first.cancel()
        self.server.release()
        self.stub.flush()
        self.assertEqual(self.successResultOf(second).user_id, "7")
        self.failureResultOf(first)

    def test_no_jwks_client_needs_a_reactor(self) -> None:
        config = make_config(**self.ENVIRON)
        self.assertRaises(TypeError, TokenVerifier, config, self.clock)


class KeyConfusionTests(VerifierTestCase):
    """
    A public key is never an HMAC secret, and the HMAC secret is never a
    public key.
    """

    def setUp(self) -> None:
        self.server = JWKSResource([jwk(RSA_A, "A")])
        self.clock = make_clock()

    def verifier_of(self, **environ: str) -> TokenVerifier:
        client: Any = StubTreq(self.server)
        verifier = TokenVerifier(make_config(**environ), self.clock, client)
        verifier.startService()
        self.addCleanup(verifier.stopService)
        return verifier

    def public_pem(self) -> bytes:
        return RSA_A.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def test_hs256_signed_with_the_public_key_is_refused(self) -> None:
        """
        The classic attack: sign HS256 with the RSA public key's PEM as the
        secret.  The HMAC family only ever uses JWT_SECRET.
        """
        verifier = self.verifier_of(JWT_JWKS_URL=JWKS_URL, JWT_ALGORITHMS="HS256,RS256")
        forged = hand_token({"alg": "HS256", "kid": "A"}, claims(), self.public_pem())
        self.assertEqual(self.rejected(verifier, forged), "bad signature")

    def test_hs256_is_not_allowed_when_only_jwks_is_configured(self) -> None:
        verifier = self.verifier_of(
            JWT_SECRET="", JWT_JWKS_URL=JWKS_URL, JWT_ALGORITHMS="HS256,RS256"
        )
        forged = hand_token({"alg": "HS256", "kid": "A"}, claims(), self.public_pem())
        self.assertEqual(self.rejected(verifier, forged), "algorithm not allowed")
        self.accepted(verifier, signed(RSA_A, "RS256", "A"))

    def test_jwks_symmetric_key_is_never_used(self) -> None:
        published = b"a-symmetric-key-published-in-the-jwks!"
        self.server.keys = [{"kty": "oct", "kid": "H", "k": b64url(published)}, jwk(RSA_A, "A")]
        verifier = self.verifier_of(JWT_JWKS_URL=JWKS_URL, JWT_ALGORITHMS="HS256,RS256")
        token = jwt.encode(claims(), published, algorithm="HS256", headers={"kid": "H"})
        self.assertEqual(self.rejected(verifier, token), "bad signature")

    def test_rs256_is_never_checked_with_the_secret(self) -> None:
        """
        An RS256 token whose "signature" is an HMAC with the secret: the
        secret is never taken for an RSA key.
        """
        verifier = self.verifier_of(JWT_JWKS_URL=JWKS_URL, JWT_ALGORITHMS="HS256,RS256")
        forged = hand_token({"alg": "RS256", "kid": "A"}, claims(), KEY)
        self.assertEqual(self.rejected(verifier, forged), "bad signature")
        forged = hand_token({"alg": "RS256"}, claims(), KEY)
        self.assertEqual(self.rejected(verifier, forged), "bad signature")
