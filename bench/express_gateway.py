"""
The shop's real Express gateway (micros/api-gateway of the qeetmart
repository), built for the benchmark from a checkout or git directory named
by EXPRESS_SRC / --express-src.

The gateway and the files its build needs are copied into a cache folder
outside this repository, its npm packages are installed at the versions
qeetmart's pnpm-lock.yaml pins for the api-gateway importer (exact direct
versions; every transitive package the lock holds at one version is pinned
with npm "overrides"), and it is compiled with its own build script (tsc).
The built copy is reused while the sources and the lock are unchanged.

Standard library only; the lockfile helpers are pure functions on text, so
tests/test_bench_express.py checks them offline.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

#: Where the gateway lives in the qeetmart repository, and the files of the
#: repository root its build reads (tsconfig.json extends ../../tsconfig.base.json).
GATEWAY = "micros/api-gateway"
IMPORTER = GATEWAY
ROOT_FILES = ("tsconfig.base.json", "tsconfig.json", "pnpm-lock.yaml")

#: The packages whose versions the bench reports.
REPORTED = ("express", "http-proxy-middleware", "helmet", "express-rate-limit", "cors", "zod", "dotenv",
            "typescript", "jsonwebtoken")

DEPENDENCY_KINDS = ("dependencies", "devDependencies", "optionalDependencies")


class ExpressBuildError(Exception):
    """The real gateway could not be found, installed or built; the message says why."""


# --------------------------------------------------------------------------
# pnpm-lock.yaml (lockfile v9), read without a YAML library: the lock uses a
# small block-style subset (mappings by indentation, "- item" lists, quoted
# keys, one-line scalars and flow mappings), which is all this reads.


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return json.loads(text)
    return text


def _split_entry(line: str, number: int) -> Tuple[str, str]:
    """A ``key: value`` line (value may be empty), the key unquoted."""
    if line[0] in "'\"":
        end = line.find(line[0], 1)
        while line[0] == "'" and end != -1 and line[end + 1:end + 2] == "'":
            end = line.find("'", end + 2)
        if end == -1 or line[end + 1:end + 2] != ":":
            raise ValueError(f"pnpm-lock.yaml line {number}: cannot read {line!r}")
        return _unquote(line[:end + 1]), line[end + 2:].strip()
    key, colon, value = line.partition(": ")
    if not colon:
        if not line.endswith(":"):
            raise ValueError(f"pnpm-lock.yaml line {number}: cannot read {line!r}")
        key, value = line[:-1], ""
    return key, value.strip()


def _scalar(value: str) -> Any:
    if value == "{}":
        return {}
    if value == "[]":
        return []
    return _unquote(value)  # flow mappings ({integrity: ...}) stay text


def parse_lock_yaml(text: str) -> Dict[str, Any]:
    """The block-style YAML subset of a pnpm lockfile as nested dicts and lists."""
    root: Dict[str, Any] = {}
    stack: List[Tuple[int, Any]] = [(-1, root)]
    pending: Optional[Tuple[Dict[str, Any], str, int]] = None  # a "key:" whose children decide dict or list
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        indent = len(raw) - len(raw.lstrip(" "))
        if pending is not None and indent > pending[2]:
            parent, key, key_indent = pending
            parent[key] = [] if line.startswith("-") else {}
            stack.append((key_indent, parent[key]))
        pending = None
        while stack[-1][0] >= indent:
            stack.pop()
        container = stack[-1][1]
        if line.startswith("- ") or line == "-":
            if not isinstance(container, list):
                raise ValueError(f"pnpm-lock.yaml line {number}: a list item outside a list")
            container.append(_scalar(line[2:].strip()))
            continue
        if not isinstance(container, dict):
            raise ValueError(f"pnpm-lock.yaml line {number}: a key inside a list")
        key, value = _split_entry(line, number)
        if value == "":
            container[key] = {}
            pending = (container, key, indent)
        else:
            container[key] = _scalar(value)
    return root


def plain_version(version: str) -> str:
    """``7.5.1(express@4.22.1)`` -> ``7.5.1``: the version without pnpm's peer suffix."""
    return version.split("(", 1)[0]


def _dependency_target(name: str, version: str) -> Tuple[str, str]:
    """The (package, version-with-peers) a dependency entry stands for; an alias names another package."""
    head = version.split("(", 1)[0]
    at = head.rfind("@")
    if at > 0:  # "string-width-cjs: string-width@4.2.3": an npm alias
        return head[:at], version[at + 1:]
    return name, version


def lock_pins(text: str, importer: str = IMPORTER) -> Dict[str, Any]:
    """
    What pnpm-lock.yaml pins for ``importer``: its direct ``dependencies``
    and ``devDependencies`` (name -> exact version), and every package of
    their closure in ``snapshots`` (name -> the set of versions the lock
    holds, optional ones included).
    """
    lock = parse_lock_yaml(text)
    if str(lock.get("lockfileVersion", "")).split(".")[0] != "9":
        raise ValueError(f"pnpm-lock.yaml: lockfileVersion {lock.get('lockfileVersion')!r}; only 9.x is read")
    entry = (lock.get("importers") or {}).get(importer)
    if entry is None:
        raise ValueError(f"pnpm-lock.yaml: no importer {importer!r}")
    snapshots: Dict[str, Any] = lock.get("snapshots") or {}
    direct: Dict[str, Dict[str, str]] = {}
    frontier: List[Tuple[str, str]] = []
    for kind in DEPENDENCY_KINDS:
        for name, pin in (entry.get(kind) or {}).items():
            version = pin["version"] if isinstance(pin, dict) else str(pin)
            if not re.match(r"\d", version):
                raise ValueError(f"pnpm-lock.yaml: {importer} {kind} {name} is {version!r}, not a registry version")
            direct.setdefault(kind, {})[name] = plain_version(version)
            frontier.append((name, version))
    closure: Dict[str, Set[str]] = {}
    seen: Set[str] = set()
    while frontier:
        name, version = frontier.pop()
        key = f"{name}@{version}"
        if key in seen:
            continue
        seen.add(key)
        closure.setdefault(name, set()).add(plain_version(version))
        snapshot = snapshots.get(key)
        if snapshot is None:
            raise ValueError(f"pnpm-lock.yaml: no snapshot {key!r}")
        for kind in ("dependencies", "optionalDependencies"):
            for child, child_version in (snapshot.get(kind) or {}).items():
                frontier.append(_dependency_target(child, str(child_version)))
    return {
        "dependencies": direct.get("dependencies", {}),
        "devDependencies": direct.get("devDependencies", {}),
        "optionalDependencies": direct.get("optionalDependencies", {}),
        "closure": {name: sorted(versions) for name, versions in sorted(closure.items())},
    }


def pinned_package_json(original: Dict[str, Any], pins: Dict[str, Any]) -> Dict[str, Any]:
    """
    The gateway's package.json with every range replaced by the lock's exact
    version, and npm ``overrides`` for each transitive package the lock holds
    at exactly one version (those at several are left to npm's resolution of
    their parents' ranges, and checked after the install).
    """
    package = dict(original)
    direct: Set[str] = set()
    for kind in DEPENDENCY_KINDS:
        if kind in original or pins.get(kind):
            wanted = original.get(kind, {})
            missing = sorted(set(wanted) - set(pins.get(kind, {})))
            if missing:
                raise ValueError(f"pnpm-lock.yaml has no {kind} pin for {', '.join(missing)}")
            package[kind] = {name: pins[kind][name] for name in wanted}
            direct.update(wanted)
    package["overrides"] = {
        name: versions[0]
        for name, versions in pins["closure"].items()
        if len(versions) == 1 and name not in direct
    }
    return package


def installed_versions(hidden_lock: Dict[str, Any]) -> Dict[str, Set[str]]:
    """name -> versions installed, from node_modules/.package-lock.json."""
    found: Dict[str, Set[str]] = {}
    for path, info in (hidden_lock.get("packages") or {}).items():
        if "node_modules/" not in path or info.get("link") or "version" not in info:
            continue
        name = path.rsplit("node_modules/", 1)[1]
        found.setdefault(name, set()).add(info["version"])
    return found


def lock_mismatches(installed: Dict[str, Set[str]], pins: Dict[str, Any]) -> List[str]:
    """Every installed package at a version the lock does not hold for it, and direct pins not met."""
    problems = []
    for name, versions in sorted(installed.items()):
        allowed = set(pins["closure"].get(name, ()))
        for version in sorted(versions - allowed):
            problems.append(
                f"{name} {version} installed, the lock has "
                + (", ".join(sorted(allowed)) if allowed else "no such package")
            )
    for kind in DEPENDENCY_KINDS:
        for name, version in pins.get(kind, {}).items():
            if version not in installed.get(name, set()) and kind != "optionalDependencies":
                problems.append(f"{name} {version} ({kind}) is not installed")
    return problems


# --------------------------------------------------------------------------
# The source: a checkout, a git directory (bare or not), or a plain copy.


def _git(args: List[str], **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def describe_source(source: Path) -> Dict[str, Any]:
    """How to read ``source``: {"kind": "checkout"|"gitdir"|"tree", "commit": ...}."""
    if not source.exists():
        raise ExpressBuildError(f"EXPRESS_SRC {source} does not exist")
    if shutil.which("git"):
        inside = _git(["-C", str(source), "rev-parse", "--is-inside-work-tree"])
        if inside.returncode == 0 and inside.stdout.strip() == b"true":
            top = Path(_git(["-C", str(source), "rev-parse", "--show-toplevel"]).stdout.decode().strip())
            commit = _git(["-C", str(top), "rev-parse", "HEAD"]).stdout.decode().strip()
            dirty = _git(["-C", str(top), "status", "--porcelain", "--", GATEWAY, *ROOT_FILES]).stdout.strip()
            return {"kind": "checkout", "path": top, "commit": commit or "unknown", "dirty": bool(dirty)}
        head = _git(["--git-dir", str(source), "rev-parse", "--verify", "HEAD^{commit}"])
        if head.returncode == 0:
            return {"kind": "gitdir", "path": source, "commit": head.stdout.decode().strip(), "dirty": False}
    if (source / GATEWAY / "package.json").is_file():
        return {"kind": "tree", "path": source, "commit": "unversioned", "dirty": True}
    raise ExpressBuildError(
        f"EXPRESS_SRC {source} is neither a qeetmart checkout, nor its git directory, nor a copy with {GATEWAY}/"
    )


def _copy_out(info: Dict[str, Any], target: Path) -> None:
    """The gateway's folder and the root files it needs, from ``info``'s source into ``target``."""
    if info["kind"] == "gitdir":
        paths = [GATEWAY] + [
            f for f in ROOT_FILES
            if _git(["--git-dir", str(info["path"]), "cat-file", "-e", f"{info['commit']}:{f}"]).returncode == 0
        ]
        archive = subprocess.Popen(
            ["git", "--git-dir", str(info["path"]), "archive", info["commit"], *paths], stdout=subprocess.PIPE
        )
        untar = subprocess.run(["tar", "-x", "-C", str(target)], stdin=archive.stdout)
        archive.stdout.close()  # type: ignore[union-attr]
        if archive.wait() != 0 or untar.returncode != 0:
            raise ExpressBuildError(f"git archive {info['commit']} from {info['path']} failed")
        return
    ignore = shutil.ignore_patterns("node_modules", "dist", ".env", "*.tsbuildinfo")
    shutil.copytree(info["path"] / GATEWAY, target / GATEWAY, ignore=ignore)
    for name in ROOT_FILES:
        if (info["path"] / name).is_file():
            shutil.copy2(info["path"] / name, target / name)


def tree_digest(root: Path) -> str:
    """sha256 over the relative paths and contents of every file under ``root``."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def workspace_imports(gateway: Path) -> List[str]:
    """The workspace packages (@qeetmart/...) the gateway's sources import."""
    found: Set[str] = set()
    for path in (gateway / "src").rglob("*.ts"):
        found.update(re.findall(r"""from\s+['"](@qeetmart/[^'"/]+)""", path.read_text(errors="replace")))
    return sorted(found)


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qeetgw-bench"


def build(source: Path, log: Any, env: Dict[str, str], cache: Optional[Path] = None) -> Dict[str, Any]:
    """
    The real gateway, built (or found built) in the cache; returns
    {"dir": the api-gateway folder, "entry": dist/index.js, "commit", "versions",
    "mismatches", "cached"}.
    """
    info = describe_source(source)
    root = cache or cache_root()
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="staging-", dir=root))
    try:
        _copy_out(info, staging)
        lock_file = staging / "pnpm-lock.yaml"
        if not lock_file.is_file():
            raise ExpressBuildError(f"{source} has no pnpm-lock.yaml at its root")
        imports = workspace_imports(staging / GATEWAY)
        if imports:
            raise ExpressBuildError(f"{GATEWAY} imports workspace packages ({', '.join(imports)}): not supported")
        sources = tree_digest(staging)
        lock_hash = hashlib.sha256(lock_file.read_bytes()).hexdigest()
        home = root / f"express-{info['commit'][:12]}-{lock_hash[:12]}"
        stamp = home / "bench-build.json"
        if stamp.is_file():
            built = json.loads(stamp.read_text())
            entry = home / GATEWAY / built.get("entry", "-")
            if built.get("sources_sha256") == sources and entry.is_file():
                log(f"real Express gateway: using the build in {home} (commit {info['commit'][:12]})")
                # This run's source (a checkout and a git directory of one commit share a build).
                return dict(built, source_kind=info["kind"], source_dirty=info["dirty"], dir=str(home / GATEWAY),
                            entry=str(entry), cached=True)
        shutil.rmtree(home, ignore_errors=True)
        staging.rename(home)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _install_and_compile(home, info, sources, lock_hash, log, env)


def _install_and_compile(
    home: Path, info: Dict[str, Any], sources: str, lock_hash: str, log: Any, env: Dict[str, str]
) -> Dict[str, Any]:
    gateway = home / GATEWAY
    try:
        pins = lock_pins((home / "pnpm-lock.yaml").read_text())
    except ValueError as error:
        raise ExpressBuildError(str(error))
    original = json.loads((gateway / "package.json").read_text())
    (gateway / "package.qeetmart.json").write_text(json.dumps(original, indent=2) + "\n")
    try:
        package = pinned_package_json(original, pins)
    except ValueError as error:
        raise ExpressBuildError(str(error))
    (gateway / "package.json").write_text(json.dumps(package, indent=2) + "\n")
    log(
        f"real Express gateway: npm install in {gateway} ({len(package.get('dependencies', {}))} dependencies and "
        f"{len(package.get('devDependencies', {}))} devDependencies at the lock's versions, "
        f"{len(package['overrides'])} transitive pins)"
    )
    run = dict(cwd=str(gateway), env=env)
    install = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"], **run
    )
    if install.returncode != 0:
        raise ExpressBuildError(f"npm install in {gateway} failed")
    log("real Express gateway: npm run build (its own script)")
    if subprocess.run(["npm", "run", "build"], **run).returncode != 0:
        raise ExpressBuildError(f"npm run build in {gateway} failed")
    entry, entry_note = _entry(gateway, original)
    installed = installed_versions(json.loads((gateway / "node_modules" / ".package-lock.json").read_text()))
    mismatches = lock_mismatches(installed, pins)
    versions = {name: ", ".join(sorted(installed[name])) for name in REPORTED if name in installed}
    built = {
        "commit": info["commit"],
        "source_kind": info["kind"],
        "source_dirty": info["dirty"],
        "lock_sha256": lock_hash,
        "sources_sha256": sources,
        "versions": versions,
        "lock_versions": {name: ", ".join(pins["closure"].get(name, [])) for name in REPORTED
                          if name in pins["closure"]},
        "packages_installed": sum(len(v) for v in installed.values()),
        "mismatches": mismatches,
        "entry": str(entry.relative_to(gateway)),
        "entry_note": entry_note,
    }
    (home / "bench-build.json").write_text(json.dumps(built, indent=2) + "\n")
    return dict(built, dir=str(gateway), entry=str(entry), cached=False)


def _entry(gateway: Path, package: Dict[str, Any]) -> Tuple[Path, Optional[str]]:
    """
    The compiled entry point, and a note when it is not where the gateway's
    package.json says: with ``composite`` and no ``rootDir``, tsc keeps the
    src/ level, so dist/index.js (``main``, ``start``) is dist/src/index.js.
    """
    main = package.get("main", "dist/index.js")
    if (gateway / main).is_file():
        return gateway / main, None
    emitted = gateway / "dist" / "src" / "index.js"
    if emitted.is_file():
        return emitted, (
            f"its build (tsc) emits dist/src/index.js, not {main} that its main field, start script and "
            "Dockerfile run; the bench runs dist/src/index.js"
        )
    raise ExpressBuildError(f"the build left neither {gateway / main} nor {emitted}")
