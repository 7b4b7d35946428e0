"""
Tests for JWT_PREVIOUS_SECRETS in L{qeetgw.config}: the secrets JWT_SECRET
had before a key rotation, each read as JWT_SECRET is, and the problem
lines that never show them.
"""

from __future__ import annotations

import base64
from typing import List, Mapping

from twisted.trial.unittest import SynchronousTestCase

from qeetgw.config import ConfigError, HMACKey, load_config
from qeetgw.config.parsers import secret_list

#: The current secret: raw text (its "-" make it not base64), 38 bytes.
CURRENT = "the-current-secret-of-the-auth-service"

#: Two earlier secrets: one text, one base64 of 48 bytes.
OLD_TEXT = "an-older-secret-of-the-auth-service-0123"
OLD_KEY = bytes(range(100, 148))
OLD_BASE64 = base64.b64encode(OLD_KEY).decode("ascii")


def problems_of(environ: Mapping[str, str]) -> List[str]:
    """
    The problem lines L{load_config} reports for C{environ}, or C{[]}.
    """
    try:
        load_config(environ)
    except ConfigError as error:
        return error.problems
    return []


class PreviousSecretsTests(SynchronousTestCase):
    """
    JWT_PREVIOUS_SECRETS is a comma list, each item read with JWT_SECRET's
    rule and JWT_SECRET_ENCODING.
    """

    def test_unset_and_blank_mean_none(self) -> None:
        for environ in [{}, {"JWT_PREVIOUS_SECRETS": ""}, {"JWT_PREVIOUS_SECRETS": " \n"}]:
            config = load_config({"JWT_SECRET": CURRENT, **environ})
            self.assertEqual(config.jwt_previous_secrets, ())
            self.assertEqual(config.read_previous_hmac_keys(), ())

    def test_items_in_order_each_read_as_jwt_secret(self) -> None:
        config = load_config(
            {"JWT_SECRET": CURRENT, "JWT_PREVIOUS_SECRETS": f"{OLD_TEXT},{OLD_BASE64}"}
        )
        self.assertEqual(
            config.read_previous_hmac_keys(),
            (HMACKey(OLD_TEXT.encode("utf-8"), "text"), HMACKey(OLD_KEY, "base64")),
        )

    def test_whitespace_around_items_is_stripped(self) -> None:
        """
        Spaces after the commas and a Kubernetes secret's trailing newline
        are not part of a key, even a text one.
        """
        config = load_config(
            {"JWT_SECRET": CURRENT, "JWT_PREVIOUS_SECRETS": f" {OLD_TEXT} ,\t{OLD_BASE64}\n"}
        )
        self.assertEqual(config.jwt_previous_secrets, (OLD_TEXT, OLD_BASE64))
        self.assertEqual(
            [read.key for read in config.read_previous_hmac_keys()],
            [OLD_TEXT.encode("utf-8"), OLD_KEY],
        )

    def test_unpadded_base64_is_its_decoding(self) -> None:
        secret = base64.b64encode(bytes(range(40))).decode("ascii").rstrip("=")
        config = load_config({"JWT_SECRET": CURRENT, "JWT_PREVIOUS_SECRETS": secret})
        self.assertEqual(config.read_previous_hmac_keys(), (HMACKey(bytes(range(40)), "base64"),))

    def test_raw_encoding_reads_every_item_as_text(self) -> None:
        config = load_config(
            {
                "JWT_SECRET": CURRENT,
                "JWT_SECRET_ENCODING": "raw",
                "JWT_PREVIOUS_SECRETS": OLD_BASE64,
            }
        )
        self.assertEqual(
            config.read_previous_hmac_keys(), (HMACKey(OLD_BASE64.encode("ascii"), "text"),)
        )

    def test_base64_encoding_refuses_a_text_item(self) -> None:
        current = base64.b64encode(bytes(40)).decode("ascii")
        self.assertEqual(
            problems_of(
                {
                    "JWT_SECRET": current,
                    "JWT_SECRET_ENCODING": "base64",
                    "JWT_PREVIOUS_SECRETS": f"{OLD_BASE64},{OLD_TEXT}",
                }
            ),
            [
                "JWT_PREVIOUS_SECRETS item 2 (previous-2): is not base64 as the "
                "auth-service's jjwt reads it (JWT_SECRET_ENCODING=base64 needs A-Z a-z 0-9 "
                "+ / and = padding, other characters only at the ends)"
            ],
        )

    def test_empty_item_is_refused_without_the_value(self) -> None:
        for listed, position in [
            (f"{OLD_TEXT},,{OLD_BASE64}", "item 2 of 3"),
            (f"{OLD_TEXT},", "item 2 of 2"),
            (f",{OLD_TEXT}", "item 1 of 2"),
        ]:
            self.assertEqual(
                problems_of({"JWT_SECRET": CURRENT, "JWT_PREVIOUS_SECRETS": listed}),
                [
                    f"JWT_PREVIOUS_SECRETS=(value hidden): {position} is empty; separate "
                    "the secrets with single commas (a secret that contains a comma cannot "
                    "be listed)"
                ],
            )

    def test_short_key_is_refused(self) -> None:
        self.assertEqual(
            problems_of(
                {
                    "JWT_SECRET": CURRENT,
                    "JWT_PREVIOUS_SECRETS": base64.b64encode(bytes(24)).decode("ascii"),
                }
            ),
            [
                "JWT_PREVIOUS_SECRETS item 1 (previous-1): the key is 24 bytes after base64 "
                "decoding; the auth-service (jjwt) needs at least 32"
            ],
        )

    def test_a_secret_with_a_comma_is_split_and_said_so(self) -> None:
        """
        A text secret that contains a comma is read as two short items,
        and the problem line says why.
        """
        problems = problems_of(
            {"JWT_SECRET": CURRENT, "JWT_PREVIOUS_SECRETS": "old-secret,with-a-comma-in-it!"}
        )
        self.assertEqual(len(problems), 2)
        for line in problems:
            self.assertIn("(its UTF-8 text, not base64)", line)
            self.assertIn("a secret that contains a comma cannot be listed", line)

    def test_key_too_short_for_the_allowed_algorithms(self) -> None:
        problems = problems_of(
            {
                "JWT_SECRET": "k-" * 32,
                "JWT_ALGORITHMS": "HS512",
                "JWT_PREVIOUS_SECRETS": OLD_BASE64,
            }
        )
        self.assertEqual(
            problems,
            [
                "JWT_PREVIOUS_SECRETS item 1 (previous-1): the key is 48 bytes, too short for "
                "HS512 (JWT_ALGORITHMS; HS256 needs 32 bytes, HS384 48, HS512 64)"
            ],
        )

    def test_a_key_fitting_one_allowed_algorithm_is_enough(self) -> None:
        config = load_config(
            {
                "JWT_SECRET": "k-" * 32,
                "JWT_ALGORITHMS": "HS256,HS512",
                "JWT_PREVIOUS_SECRETS": OLD_TEXT,
            }
        )
        self.assertEqual(len(config.read_previous_hmac_keys()), 1)

    def test_the_current_key_is_refused(self) -> None:
        """
        The same key as JWT_SECRET, even spelled otherwise (unpadded base64
        against padded), is a mistake: the rotation would not be one.
        """
        current = base64.b64encode(bytes(range(40))).decode("ascii")
        for listed in [current, current.rstrip("=") + "\n"]:
            self.assertEqual(
                problems_of({"JWT_SECRET": current, "JWT_PREVIOUS_SECRETS": listed}),
                [
                    "JWT_PREVIOUS_SECRETS item 1 (previous-1): the same key as JWT_SECRET; "
                    "list each previous key once, and never the current one"
                ],
            )

    def test_a_key_listed_twice_is_refused(self) -> None:
        self.assertEqual(
            problems_of(
                {
                    "JWT_SECRET": CURRENT,
                    "JWT_PREVIOUS_SECRETS": f"{OLD_BASE64},{OLD_TEXT},{OLD_BASE64.rstrip('=')}",
                }
            ),
            [
                "JWT_PREVIOUS_SECRETS item 3 (previous-3): the same key as "
                "JWT_PREVIOUS_SECRETS item 1 (previous-1); list each previous key once, "
                "and never the current one"
            ],
        )

    def test_previous_secrets_need_jwt_secret(self) -> None:
        line = (
            "JWT_PREVIOUS_SECRETS is set but JWT_SECRET is not: previous secrets are "
            "accepted only beside the current one (JWT_SECRET, the secret the "
            "auth-service signs with)"
        )
        self.assertEqual(
            problems_of({"REQUIRE_AUTH": "false", "JWT_PREVIOUS_SECRETS": OLD_TEXT}), [line]
        )
        self.assertEqual(
            problems_of(
                {
                    "JWT_JWKS_URL": "https://auth.example/jwks.json",
                    "JWT_ALGORITHMS": "RS256",
                    "JWT_PREVIOUS_SECRETS": OLD_TEXT,
                }
            ),
            [line],
        )

    def test_problem_lines_never_show_a_secret(self) -> None:
        for listed in [
            "hunter2-one,,hunter2-two",
            "hunter2-short",
            f"hunter2-{OLD_TEXT},hunter2-{OLD_TEXT}",
            CURRENT,
        ]:
            text = "\n".join(
                problems_of({"JWT_SECRET": CURRENT, "JWT_PREVIOUS_SECRETS": listed, "PORT": "x"})
            )
            self.assertIn("JWT_PREVIOUS_SECRETS", text)
            self.assertNotIn("hunter2", text)
            self.assertNotIn(CURRENT, text)

    def test_the_configuration_never_shows_a_secret(self) -> None:
        """
        Neither JWT_SECRET, nor an item of JWT_PREVIOUS_SECRETS, nor
        REDIS_URL's password is in the configuration's repr (what a log
        line or a traceback showing it would print).
        """
        config = load_config(
            {
                "JWT_SECRET": "current-secret-" * 3,
                "JWT_PREVIOUS_SECRETS": "previous-secret-" * 3,
                "REDIS_URL": "redis://:hunter2-password@redis.example:6379/0",
            }
        )
        self.assertEqual(config.jwt_previous_secrets, ("previous-secret-" * 3,))
        shown = repr(config)
        for secret in ("current-secret-", "previous-secret-", "hunter2-password"):
            self.assertNotIn(secret, shown)
        self.assertIn("jwt_issuer=", shown)

    def test_parser_splits_on_commas_only(self) -> None:
        self.assertEqual(secret_list(" a b , c\n"), ("a b", "c"))
        self.assertEqual(secret_list(""), ())
