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
_SKIPPED = {".git", ".venv", ".venv-oldest", ".tools", "node_modules", "__pycache__", "_trial_temp", "results", "build", "dist"}

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
    modules it imports, at any depth of its code (a function's and a
    C{TYPE_CHECKING} block's imports included).  A package counts as its
    C{__init__} module.
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
            graph[module] = imported
    return graph


def imports_of(graph: Dict[str, Set[str]], prefix: str) -> List[str]:
    """
    Every "module imports other" of C{graph} where the other module is
    C{prefix} or below it, sorted.
    """
    return sorted(
        f"{module} imports {other}"
        for module, imported in graph.items()
        for other in imported
        if other == prefix or other.startswith(prefix + ".")
    )


class ImportTests(SynchronousTestCase):
    """
    How the modules depend on one another.
    """

    def setUp(self) -> None:
        self.graph = package_imports("qeetgw")
        self.assertIn("qeetgw.upstream.proxy", self.graph)

    def test_no_module_imports_one_that_imports_it(self) -> None:
        cycles = sorted(
            f"{module} <-> {other}"
            for module, imported in self.graph.items()
            for other in imported
            if module < other and module in self.graph.get(other, set())
        )
        self.assertEqual(cycles, [])

    def test_the_gateway_never_imports_the_development_tools(self) -> None:
        self.assertEqual(imports_of(self.graph, "qeetgw_dev"), [])

    def test_the_gateway_never_imports_twisted_test_doubles(self) -> None:
        """
        C{twisted.internet.testing} (C{MemoryReactor} and the other doubles)
        is for tests: the gateway checks its endpoint descriptions without it.
        """
        self.assertEqual(imports_of(self.graph, "twisted.internet.testing"), [])


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
