"""
A helm for the tests of C{deploy/helm}: found in a fixed order, and run to
render a chart with values files into its objects.

The order, first found wins:

  1. C{$HELM}, a path given on purpose;
  2. C{.tools/helm-<version>}, the release C{make test} installs from npm
     (the Makefile's C{helm} target);
  3. a C{helm} on C{PATH}.

With none, L{find_helm} says why, for a skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import attrs
import yaml

from tests.kustomize import PROJECT_ROOT

#: The release the Makefile installs; keep it equal to HELM_VERSION there.
HELM_VERSION = "3.10.1"

#: Where the Makefile puts its helm.
INSTALLED = os.path.join(PROJECT_ROOT, ".tools", f"helm-{HELM_VERSION}")

# A render is well under a second; this only bounds a hung one.
_TIMEOUT_S = 120


@attrs.frozen
class Helm:
    """
    A helm that can be run.

    @ivar path: the executable.
    @ivar source: where it was found, for messages.
    """

    path: str
    source: str

    def template(
        self,
        release: str,
        chart: str,
        values: Sequence[str] = (),
        settings: Optional[Mapping[str, str]] = None,
    ) -> List[Dict[str, Any]]:
        """
        Render C{chart} as release C{release} with the values files
        C{values} and the C{--set} C{settings}, as C{helm template} does
        (no cluster).

        @return: the rendered objects, in helm's order.
        @raise RuntimeError: when helm fails, with what it said.
        """
        command = [self.path, "template", release, chart]
        for path in values:
            command += ["--values", path]
        for name, value in (settings or {}).items():
            command += ["--set-string", f"{name}={value}"]
        # HOME and the cache directories in a throwaway place: helm reads
        # and writes its own configuration there, never the user's.
        home = os.path.join(PROJECT_ROOT, ".tools", "helm-home")
        environ = dict(
            os.environ,
            HELM_CACHE_HOME=os.path.join(home, "cache"),
            HELM_CONFIG_HOME=os.path.join(home, "config"),
            HELM_DATA_HOME=os.path.join(home, "data"),
        )
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False, env=environ
        )
        if result.returncode != 0:
            raise RuntimeError(f"helm template failed ({self.source}): {result.stderr.strip()}")
        return [document for document in yaml.safe_load_all(result.stdout) if document]


def _executable(path: Optional[str]) -> bool:
    return bool(path) and os.path.isfile(path) and os.access(path, os.X_OK)  # type: ignore[arg-type]


def find_helm(environ: Optional[Dict[str, str]] = None) -> Tuple[Optional[Helm], str]:
    """
    The first helm of the module's order.

    @param environ: the environment to read C{HELM} and C{PATH} from
        (C{os.environ} by default).
    @return: the helm and C{""}, or C{None} and why none was found.
    """
    environ = dict(os.environ) if environ is None else environ
    given = environ.get("HELM")
    if given:
        if _executable(given):
            return Helm(given, "$HELM"), ""
        return None, f"$HELM={given!r} is not an executable file"
    if _executable(INSTALLED):
        return Helm(INSTALLED, f"{INSTALLED} (make test)"), ""
    on_path = shutil.which("helm", path=environ.get("PATH", ""))
    if on_path:
        return Helm(on_path, "helm on PATH"), ""
    return None, (
        f"no helm: not {INSTALLED} (make test installs it where npm is, on x86-64 Linux), "
        "no helm on PATH; or set HELM"
    )
