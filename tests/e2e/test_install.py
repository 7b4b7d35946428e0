"""
twistd finds the qeetgw plugin however the package is installed: from a
regular install (``pip install .``) and from an editable one (what
``make`` sets up).
"""

from __future__ import annotations

import json
import os
import sys
from importlib import metadata
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, TestCase

from tests.e2e.support import PROJECT_ROOT

# Prints the file the qeetgw plugin was loaded from.
_FIND_PLUGIN = (
    "import sys\n"
    "from twisted.plugin import getPlugins\n"
    "from twisted.application.service import IServiceMaker\n"
    "names = [p.tapname for p in getPlugins(IServiceMaker)]\n"
    "assert 'qeetgw' in names, names\n"
    "print(sys.modules['twisted.plugins.qeetgw_plugin'].__file__)\n"
)


def _editable_install() -> bool:
    """
    Whether this Python has qeetgw installed in editable mode.
    """
    try:
        distribution = metadata.distribution("qeetgw")
    except metadata.PackageNotFoundError:
        return False
    direct_url = distribution.read_text("direct_url.json")
    return bool(direct_url) and json.loads(direct_url).get("dir_info", {}).get("editable", False)


class PluginDiscoveryTests(TestCase):
    """
    The plugin is found outside the source tree.
    """

    timeout = 300

    @inlineCallbacks
    def test_found_after_a_regular_install(self) -> Any:
        # Built without isolation (no download): this Python needs what
        # `make` installs into .venv, setuptools with bdist_wheel.
        try:
            import setuptools.command.bdist_wheel  # noqa: F401
        except ImportError:
            raise SkipTest("this Python's setuptools cannot build wheels offline; use make test")
        target = os.path.abspath(self.mktemp())
        out, err, code = yield getProcessOutputAndValue(
            sys.executable,
            ["-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
             "--target", target, PROJECT_ROOT],
            env=dict(os.environ),
        )
        self.assertEqual(code, 0, err)
        self.assertTrue(os.path.exists(os.path.join(target, "twisted", "plugins", "qeetgw_plugin.py")))
        self.assertFalse(os.path.exists(os.path.join(target, "twisted", "plugins", "__init__.py")))
        elsewhere = os.path.abspath(self.mktemp())
        os.makedirs(elsewhere)
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, ["-c", _FIND_PLUGIN],
            env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": target}, path=elsewhere,
        )
        self.assertEqual(code, 0, err)
        self.assertTrue(out.decode().strip().startswith(target), out)

    @inlineCallbacks
    def test_found_in_the_editable_install(self) -> Any:
        if not _editable_install():
            raise SkipTest("qeetgw is not installed in editable mode in this Python")
        elsewhere = os.path.abspath(self.mktemp())
        os.makedirs(elsewhere)
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, ["-c", _FIND_PLUGIN],
            env={"PATH": os.environ.get("PATH", "")}, path=elsewhere,
        )
        self.assertEqual(code, 0, err)
        self.assertTrue(out.decode().strip().startswith(PROJECT_ROOT), out)
