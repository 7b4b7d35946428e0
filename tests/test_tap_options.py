"""
Tests for L{qeetgw.process.tap.Options}: the C{twistd qeetgw} command line.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from typing import List, Mapping, Optional

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

import qeetgw
from qeetgw.config import VARIABLES
from qeetgw.process.tap import Options

#: An environment without JWT enforcement, so no secret is needed.
NO_AUTH: Mapping[str, str] = {"REQUIRE_AUTH": "false"}

#: The project's root directory, for the twistd subprocess's PYTHONPATH.
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(qeetgw.__file__)))


class OptionsTests(SynchronousTestCase):
    """
    Options override the environment, which overrides .env.
    """

    def parse(
        self, argv: List[str], environ: Optional[Mapping[str, str]] = None,
        dotenv: Optional[str] = None,
    ) -> Options:
        """
        Parse C{argv} with C{environ} as the environment and a C{.env} of
        content C{dotenv} (none when L{None}).
        """
        path = self.mktemp()
        if dotenv is not None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(dotenv)
        options = Options(environ=environ or {}, dotenv_path=path)
        options.parseOptions(argv)
        return options

    def test_option_overrides_environment(self) -> None:
        options = self.parse(["--rate-limit-max", "7"], {**NO_AUTH, "RATE_LIMIT_MAX": "5"})
        self.assertEqual(options.config.rate_limit_max, 7)

    def test_environment_used_without_option(self) -> None:
        options = self.parse([], {**NO_AUTH, "RATE_LIMIT_MAX": "5"})
        self.assertEqual(options.config.rate_limit_max, 5)

    def test_precedence_across_all_sources(self) -> None:
        options = self.parse(
            ["--jwt-issuer=https://option.example"],
            {**NO_AUTH, "JWT_ISSUER": "https://env.example", "JWT_AUDIENCE": "env-aud"},
            "JWT_ISSUER=https://dotenv.example\nJWT_AUDIENCE=dotenv-aud\nRATE_LIMIT_MAX=9\n",
        )
        config = options.config
        self.assertEqual(
            (config.jwt_issuer, config.jwt_audience, config.rate_limit_max),
            ("https://option.example", "env-aud", 9),
        )

    def test_boolean_options_take_a_value(self) -> None:
        options = self.parse(["--require-auth=false", "--cors-credentials", "true"])
        self.assertIs(options.config.require_auth, False)
        self.assertIs(options.config.cors_credentials, True)

    def test_secret_option(self) -> None:
        options = self.parse(["--jwt-secret", "from-option-secret-at-least-32-bytes"])
        self.assertEqual(options.config.jwt_secret, "from-option-secret-at-least-32-bytes")

    def test_port_endpoint_description(self) -> None:
        options = self.parse(["--port", "tcp:5000:interface=127.0.0.1"], {**NO_AUTH, "PORT": "1"})
        self.assertEqual(options.config.listen, "tcp:5000:interface=127.0.0.1")

    def test_port_number_and_host(self) -> None:
        options = self.parse(["--port", "5000", "--host", "::1"], NO_AUTH)
        self.assertEqual(options.config.listen, "tcp:5000:interface=\\:\\:1")

    def test_service_url_option(self) -> None:
        options = self.parse(["--order-service-url", "http://orders:9000/"], NO_AUTH)
        self.assertEqual(options.config.service_named("order-service").url, "http://orders:9000")

    def test_cors_origins_option_beats_environment_alias(self) -> None:
        options = self.parse(
            ["--cors-origins", "https://a.example"],
            {**NO_AUTH, "CORS_ORIGIN": "https://b.example"},
        )
        self.assertEqual(options.config.cors_origins, ("https://a.example",))

    def test_only_given_options_override(self) -> None:
        options = self.parse([], NO_AUTH)
        self.assertEqual(options.overrides(), {})
        options = self.parse(["--log-format", "json", "--port", "1"], NO_AUTH)
        self.assertEqual(options.overrides(), {"LOG_FORMAT": "json", "LISTEN": "1"})

    def test_defaults_read_os_environ_and_cwd_dotenv(self) -> None:
        directory = os.path.abspath(self.mktemp())
        os.mkdir(directory)
        with open(os.path.join(directory, ".env"), "w") as f:
            f.write("RATE_LIMIT_MAX=11\nREQUIRE_AUTH=false\n")
        cwd = os.getcwd()
        os.chdir(directory)
        self.addCleanup(os.chdir, cwd)
        self.patch(os, "environ", {"RATE_LIMIT_WINDOW_MS": "1234"})
        options = Options()
        options.parseOptions([])
        config = options.config
        self.assertEqual((config.rate_limit_max, config.rate_limit_window_ms), (11, 1234))


class OptionErrorTests(SynchronousTestCase):
    """
    A bad value is a UsageError listing one line per problem.
    """

    def error_of(
        self, argv: List[str], environ: Optional[Mapping[str, str]] = None
    ) -> usage.UsageError:
        """
        The UsageError parsing C{argv} raises, with C{environ} (by default
        one without auth) as the environment and no C{.env}.
        """
        environ = NO_AUTH if environ is None else environ
        options = Options(environ=environ, dotenv_path=self.mktemp())
        return self.assertRaises(usage.UsageError, options.parseOptions, argv)

    def test_bad_option_value(self) -> None:
        error = self.error_of(["--rate-limit-max", "abc"])
        self.assertEqual(str(error), "RATE_LIMIT_MAX='abc': must be a whole number of at least 1")

    def test_bad_environment_value(self) -> None:
        error = self.error_of([], {**NO_AUTH, "LOG_FORMAT": "xml"})
        self.assertEqual(str(error), "LOG_FORMAT='xml': must be one of: text, json")

    def test_several_problems_one_line_each(self) -> None:
        error = self.error_of(["--rate-limit-max", "abc", "--port", "garbage"], {})
        self.assertEqual(
            str(error).split("\n"),
            [
                "--port='garbage': must be a Twisted endpoint description such as "
                "tcp:4000:interface=0.0.0.0 or ssl:4443:privateKey=key.pem:certKey=cert.pem "
                "(Unknown endpoint type: 'garbage')",
                "RATE_LIMIT_MAX='abc': must be a whole number of at least 1",
                "JWT_SECRET is not set: must be the auth-service's secret when REQUIRE_AUTH=true "
                "(set REQUIRE_AUTH=false only for development)",
            ],
        )

    def test_malformed_dotenv(self) -> None:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("REQUIRE_AUTH=false\nnonsense\n")
        options = Options(environ={}, dotenv_path=path)
        error = self.assertRaises(usage.UsageError, options.parseOptions, [])
        self.assertEqual(str(error), f"{path}:2: expected KEY=VALUE")

    def test_unknown_option(self) -> None:
        error = self.error_of(["--no-such-option", "1"])
        self.assertIn("no-such-option", str(error))

    def test_usage_is_short_after_a_bad_configuration(self) -> None:
        """
        twistd prints the usage before the error; after a bad value it is a
        pointer to --help, not the whole option list.
        """
        options = Options(environ={}, dotenv_path=self.mktemp())
        self.assertRaises(usage.UsageError, options.parseOptions, ["--rate-limit-max", "abc"])
        self.assertEqual(
            options.getUsage(),
            "qeetgw: bad configuration, one problem a line below "
            "(twistd qeetgw --help lists every option and variable):",
        )


class HelpTests(SynchronousTestCase):
    """
    --help lists every option and names every variable with its default.
    """

    def help_text(self) -> str:
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        options = Options(environ={}, dotenv_path=self.mktemp())
        self.assertRaises(SystemExit, options.parseOptions, ["--help"])
        # usage wraps help text; compare with whitespace collapsed.
        return " ".join(out.getvalue().split())

    def test_help_lists_every_option(self) -> None:
        text = self.help_text()
        for variable in VARIABLES:
            if variable.option is not None:
                self.assertIn(f"--{variable.option}=", text)

    def test_help_names_every_variable(self) -> None:
        text = self.help_text()
        for variable in VARIABLES:
            if variable.environment:
                self.assertIn(variable.name, text)

    def test_help_shows_variable_and_default(self) -> None:
        text = self.help_text()
        self.assertIn("Maximum requests per window [env: RATE_LIMIT_MAX, default: 1000]", text)
        self.assertIn("[env: JWT_SECRET, default: unset]", text)
        self.assertIn("[env: CORS_ORIGINS or CORS_ORIGIN,", text)

    def test_help_after_a_failed_parse_is_still_complete(self) -> None:
        options = Options(environ={}, dotenv_path=self.mktemp())
        self.assertIn("--rate-limit-max=", options.getUsage())


class TwistdTests(SynchronousTestCase):
    """
    Through twistd itself, a bad configuration is one line per problem and
    exit status 1, never a traceback.
    """

    def test_twistd_reports_problems_without_traceback(self) -> None:
        # A plugin of our own, under its own name, so that this test does not
        # depend on (or clash with) the project's twisted/plugins file.
        root = os.path.abspath(self.mktemp())
        plugins = os.path.join(root, "twisted", "plugins")
        os.makedirs(plugins)
        with open(os.path.join(plugins, "qeetgw_options_probe.py"), "w") as f:
            f.write(textwrap.dedent("""\
                from twisted.application.service import ServiceMaker
                probe = ServiceMaker(
                    "qeetgw options probe", "qeetgw.process.tap", "test only", "qeetgw-options-probe"
                )
            """))
        environ = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": os.pathsep.join([PROJECT_ROOT, root]),
            "RATE_LIMIT_MAX": "abc",
        }
        result = subprocess.run(
            [sys.executable, "-c",
             "import sys; sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()",
             "--nodaemon", "qeetgw-options-probe", "--log-format", "xml"],
            cwd=root, env=environ, capture_output=True, text=True, timeout=60,
        )
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 1, output)
        self.assertNotIn("Traceback", output)
        # twistd prints its synopsis and our short usage, then the error with
        # its own "twistd <first argument>: " before the first line.
        self.assertEqual(
            output.splitlines(),
            [
                "Usage: twistd [options]",
                "qeetgw: bad configuration, one problem a line below "
                "(twistd qeetgw --help lists every option and variable):",
                "twistd --nodaemon: RATE_LIMIT_MAX='abc': must be a whole number of at least 1",
                "LOG_FORMAT='xml': must be one of: text, json",
                "JWT_SECRET is not set: must be the auth-service's secret when REQUIRE_AUTH=true "
                "(set REQUIRE_AUTH=false only for development)",
            ],
        )
