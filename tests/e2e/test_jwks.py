"""
The JWKS key source against a real JWKS server on a loopback socket, with
key rotation.

The HTTP is real (treq, an Agent, a twisted.web Site on 127.0.0.1:0); time
is a L{Clock}, so the refetch interval passes without sleeping.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, cast

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IListeningPort, IReactorTCP
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from qeetgw.auth.claims import TokenRejected
from qeetgw.auth.jwks import make_jwks_client
from qeetgw.auth.verifier import TokenVerifier
from qeetgw.config import load_config

NOW = 1_800_000_000.0
ISSUER = "http://localhost:4001"

KEY_A = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KEY_B = ec.generate_private_key(ec.SECP256R1())


def public_jwk(key: Any, key_id: str) -> Dict[str, Any]:
    """
    The public JWK of C{key}, with C{kid}, as pyjwt writes it.
    """
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        data: Dict[str, Any] = RSAAlgorithm.to_jwk(public, as_dict=True)
    else:
        data = ECAlgorithm.to_jwk(public, as_dict=True)
    data["kid"] = key_id
    return data


def token(key: Any, algorithm: str, key_id: str) -> str:
    """
    An access token as the auth-service would issue it with a key pair.
    """
    claims = {
        "sub": "ada@example.com",
        "userId": 42,
        "role": "USER",
        "tokenType": "access",
        "iss": ISSUER,
        "iat": int(NOW),
        "exp": int(NOW) + 900,
    }
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": key_id})


class KeySet(Resource):
    """
    A JWKS document whose keys the test changes, counting requests.
    """

    isLeaf = True

    def __init__(self, keys: List[Dict[str, Any]]) -> None:
        super().__init__()
        self.keys = keys
        self.requests = 0

    def render_GET(self, request: Request) -> bytes:
        self.requests += 1
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"keys": self.keys}).encode()


def listen(resource: Resource, number: int = 0) -> IListeningPort:
    """
    Serve C{resource} on loopback port C{number} (any free one for 0).
    """
    tcp = cast(IReactorTCP, reactor)
    return tcp.listenTCP(number, Site(resource), interface="127.0.0.1")  # type: ignore[arg-type]


def jwks_url(port: IListeningPort) -> str:
    """
    The JWKS URL of a server listening on C{port}.
    """
    number = cast(IPv4Address, port.getHost()).port
    return f"http://127.0.0.1:{number}/.well-known/jwks.json"


class JWKSRotationTests(TestCase):
    """
    Tokens signed with a rotated-in key verify after one refetch.
    """

    # A bound on the whole test; each step is a loopback round trip.
    timeout = 30

    def serve(self, resource: Resource) -> str:
        """
        Serve C{resource} on a loopback port for the test; its JWKS URL.
        """
        port = listen(resource)
        self.addCleanup(port.stopListening)
        return jwks_url(port)

    def verifier(self, url: str, clock: Clock) -> TokenVerifier:
        """
        A started verifier of the JWKS at C{url}, on real sockets and
        C{clock}'s time.
        """
        config = load_config(
            {
                "JWT_JWKS_URL": url,
                "JWT_ALGORITHMS": "RS256,ES256",
                "JWT_JWKS_REFRESH_MS": "60000",
            }
        )
        verifier = TokenVerifier(config, clock, jwks_client=make_jwks_client(reactor))
        verifier.startService()
        self.addCleanup(verifier.stopService)
        return verifier

    @inlineCallbacks
    def test_rotation(self) -> Any:
        keys = KeySet([public_jwk(KEY_A, "A")])
        clock = Clock()
        clock.advance(NOW)
        verifier = self.verifier(self.serve(keys), clock)

        # The first token waits for the fetch start() began.
        identity = yield verifier.verify(token(KEY_A, "RS256", "A"))
        self.assertEqual((identity.user_id, keys.requests), ("42", 1))

        # The auth-service rotates to key B and withdraws A.
        keys.keys = [public_jwk(KEY_B, "B")]
        clock.advance(60)
        result: Deferred[Any] = verifier.verify(token(KEY_B, "ES256", "B"))
        identity = yield result
        self.assertEqual((identity.subject, keys.requests), ("ada@example.com", 2))

        # A is gone, and so are the tokens it verified; no third fetch yet.
        with self.assertRaises(TokenRejected) as caught:
            yield verifier.verify(token(KEY_A, "RS256", "A"))
        self.assertEqual((caught.exception.reason, keys.requests), ("unknown key id", 2))

    @inlineCallbacks
    def test_server_down_then_up(self) -> Any:
        """
        With the JWKS server unreachable, tokens are refused ("keys
        unavailable"), and once it answers they verify.
        """
        keys = KeySet([public_jwk(KEY_A, "A")])
        # Learn a free port, and leave it closed for now.
        port = listen(keys)
        url = jwks_url(port)
        number = cast(IPv4Address, port.getHost()).port
        yield port.stopListening()
        clock = Clock()
        clock.advance(NOW)
        verifier = self.verifier(url, clock)

        with self.assertRaises(TokenRejected) as caught:
            yield verifier.verify(token(KEY_A, "RS256", "A"))
        self.assertEqual(caught.exception.reason, "keys unavailable")

        port = listen(keys, number)
        self.addCleanup(port.stopListening)
        clock.advance(60)
        identity = yield verifier.verify(token(KEY_A, "RS256", "A"))
        self.assertEqual((identity.role, keys.requests), ("USER", 1))
