"""
Facts about the project's files rather than its code: what they promise
exists, and what they must never name.
"""

from __future__ import annotations

import ast
import os
import re
from typing import Dict, Iterator, List, Set

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Folders that are not the project's own text: tools, caches, results.
_SKIPPED = {".git", ".venv", ".venv-oldest", "node_modules", "__pycache__", "_trial_temp", "results", "build", "dist"}

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


def package_imports(package: str) -> Dict[str, Set[str]]:
    """
    For each module of C{package} (a folder under the project root), the
    modules of the project it imports, at any depth of its code (a function's
    and a C{TYPE_CHECKING} block's imports included).  A package counts as
    its C{__init__} module.
    """
    graph: Dict[str, Set[str]] = {}
    for folder, folders, files in os.walk(os.path.join(PROJECT_ROOT, package)):
        folders[:] = [f for f in folders if f != "__pycache__"]
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            module = os.path.relpath(path, PROJECT_ROOT)[: -len(".py")].replace(os.sep, ".")
            module = module.removesuffix(".__init__")
            with open(path, encoding="utf-8") as opened:
                tree = ast.parse(opened.read(), path)
            imported: Set[str] = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    imported.add(node.module)
                elif isinstance(node, ast.Import):
                    imported.update(alias.name for alias in node.names)
            graph[module] = {name for name in imported if name.split(".")[0] in ("qeetgw", "qeetgw_dev")}
    return graph


class ImportTests(SynchronousTestCase):
    """
    How the modules depend on one another.
    """

    def test_no_module_imports_one_that_imports_it(self) -> None:
        graph = package_imports("qeetgw")
        cycles = sorted(
            f"{module} <-> {other}"
            for module, imported in graph.items()
            for other in imported
            if module < other and module in graph.get(other, set())
        )
        self.assertEqual(cycles, [])

    def test_the_gateway_never_imports_the_development_tools(self) -> None:
        graph = package_imports("qeetgw")
        found = sorted(
            f"{module} imports {other}"
            for module, imported in graph.items()
            for other in imported
            if other.split(".")[0] == "qeetgw_dev"
        )
        self.assertEqual(found, [])
        self.assertIn("qeetgw.upstream.proxy", graph)


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
