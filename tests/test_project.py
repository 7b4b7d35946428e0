"""
Facts about the project's files rather than its code: what they promise
exists, and what they must never name.
"""

from __future__ import annotations

import os
import re
from typing import Iterator, List

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Folders that are not the project's own text: tools, caches, results.
_SKIPPED = {".git", ".venv", "node_modules", "__pycache__", "_trial_temp", "results", "build", "dist"}

#: A path of the machine the project was written on: its work and farm
#: folders.  The project names paths relative to itself.
_MACHINE_PATH = re.compile(r"(^|[^A-Za-z0-9_.])/(work|farm)/")


def project_files() -> Iterator[str]:
    """
    Every text file of the project, as a path relative to its root.
    """
    for folder, folders, files in os.walk(PROJECT_ROOT):
        folders[:] = [f for f in folders if f not in _SKIPPED and not f.startswith("_trial_temp")]
        for name in files:
            if name in _SKIPPED:
                continue  # a worktree's .git is a file
            path = os.path.join(folder, name)
            try:
                with open(path, encoding="utf-8") as opened:
                    opened.read(1)
            except (UnicodeDecodeError, OSError):
                continue
            yield os.path.relpath(path, PROJECT_ROOT)


class ProjectFileTests(SynchronousTestCase):
    """
    The project's files.
    """

    def test_no_file_names_a_path_of_this_machine(self) -> None:
        found: List[str] = []
        for relative in project_files():
            with open(os.path.join(PROJECT_ROOT, relative), encoding="utf-8") as opened:
                for number, line in enumerate(opened, 1):
                    if _MACHINE_PATH.search(line):
                        found.append(f"{relative}:{number}: {line.strip()}")
        self.assertEqual(found, [])

    def test_the_plugin_promises_only_plugins_that_exist(self) -> None:
        path = os.path.join(PROJECT_ROOT, "twisted", "plugins", "qeetgw_plugin.py")
        with open(path, encoding="utf-8") as opened:
            text = opened.read()
        promised = set(re.findall(r"C\{twistd (?:-n |--nodaemon )?([\w-]+)", text))
        existing = {plugin.tapname for plugin in getPlugins(IServiceMaker)}
        self.assertIn("qeetgw", promised)
        self.assertEqual(promised - existing, set())
