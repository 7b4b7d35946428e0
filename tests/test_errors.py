"""
Tests for L{qeetgw.errors}: the envelope built from its parts is the bytes
the general JSON encoder gives.
"""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from qeetgw.errors import dumps, envelope

#: Strings JSON must escape or carry as they are.
NASTY = ['"', "\\", "\\\"", "\n\r\t\b\f", "\x00\x01\x1f\x7f", "é", "\u2028\u2029", "\U0001f600", "</script>", "", " "]


def nasty_string(rng: random.Random) -> str:
    """
    A random string of nasty pieces and random code points (no lone
    surrogates: neither encoder can write them as UTF-8).
    """
    parts = []
    for _ in range(rng.randrange(0, 8)):
        if rng.random() < 0.5:
            parts.append(rng.choice(NASTY))
        else:
            point = rng.randrange(0, 0x110000)
            parts.append(chr(point) if not 0xD800 <= point < 0xE000 else "x")
    return "".join(parts)


class EnvelopeTests(SynchronousTestCase):
    """
    L{envelope} against L{dumps} of the same object.
    """

    def test_same_bytes_as_the_encoder(self) -> None:
        rng = random.Random(13)
        for _ in range(3000):
            code, message = nasty_string(rng), nasty_string(rng)
            cid = nasty_string(rng) if rng.random() < 0.8 else None
            error = {"message": message, "code": code}
            if cid is not None:
                error["correlationId"] = cid
            self.assertEqual(envelope(code, message, cid), dumps({"success": False, "error": error}))
