"""
Tests for bench/express_gateway.py's lockfile helpers: the versions qeetmart's
pnpm-lock.yaml pins for the api-gateway, and the package.json the bench
installs them with.  Offline, on a small inline lock.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from twisted.trial.unittest import SynchronousTestCase


def _load() -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "bench" / "express_gateway.py"
    spec = importlib.util.spec_from_file_location("bench_express_gateway", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


express_gateway = _load()

LOCK = """\
lockfileVersion: '9.0'

settings:
  autoInstallPeers: true

importers:

  .:
    devDependencies:
      typescript:
        specifier: ^5.9.3
        version: 5.9.3

  micros/api-gateway:
    dependencies:
      express:
        specifier: ^4.21.1
        version: 4.22.1
      express-rate-limit:
        specifier: ^7.4.1
        version: 7.5.1(express@4.22.1)
      http-proxy-middleware:
        specifier: ^3.0.3
        version: 3.0.5
    devDependencies:
      '@types/node':
        specifier: ^22.19.11
        version: 22.19.11

packages:

  '@types/node@22.19.11':
    resolution: {integrity: sha512-AAAA==}

  express@4.22.1:
    resolution: {integrity: sha512-BBBB==}
    engines: {node: '>= 0.10.0'}

snapshots:

  '@types/node@22.19.11':
    dependencies:
      undici-types: 6.21.0

  debug@2.6.9:
    dependencies:
      ms: 2.0.0

  debug@4.4.3:
    dependencies:
      ms: 2.1.3

  express-rate-limit@7.5.1(express@4.22.1):
    dependencies:
      express: 4.22.1

  express@4.22.1:
    dependencies:
      debug: 2.6.9
      qs: 6.14.2

  follow-redirects@1.15.11(debug@4.4.3):
    optionalDependencies:
      debug: 4.4.3

  http-proxy-middleware@3.0.5:
    dependencies:
      debug: 4.4.3
      follow-redirects: 1.15.11(debug@4.4.3)
    transitivePeerDependencies:
      - supports-color

  ms@2.0.0: {}

  ms@2.1.3: {}

  qs@6.14.2: {}

  typescript@5.9.3: {}

  undici-types@6.21.0: {}
"""

PACKAGE = {
    "name": "@qeetmart/api-gateway",
    "type": "module",
    "scripts": {"build": "tsc"},
    "dependencies": {"express": "^4.21.1", "express-rate-limit": "^7.4.1", "http-proxy-middleware": "^3.0.3"},
    "devDependencies": {"@types/node": "^22.19.11"},
}


class LockPinsTests(SynchronousTestCase):
    def test_direct_dependencies_are_the_exact_versions_without_peer_suffixes(self) -> None:
        pins = express_gateway.lock_pins(LOCK)
        self.assertEqual(
            pins["dependencies"],
            {"express": "4.22.1", "express-rate-limit": "7.5.1", "http-proxy-middleware": "3.0.5"},
        )
        self.assertEqual(pins["devDependencies"], {"@types/node": "22.19.11"})

    def test_closure_follows_snapshots_and_keeps_every_version(self) -> None:
        closure = express_gateway.lock_pins(LOCK)["closure"]
        self.assertEqual(closure["debug"], ["2.6.9", "4.4.3"])
        self.assertEqual(closure["ms"], ["2.0.0", "2.1.3"])
        self.assertEqual(closure["follow-redirects"], ["1.15.11"])
        self.assertEqual(closure["undici-types"], ["6.21.0"])
        # Another importer's packages stay out.
        self.assertNotIn("typescript", closure)

    def test_an_unknown_importer_is_an_error(self) -> None:
        self.assertRaises(ValueError, express_gateway.lock_pins, LOCK, "micros/nothing")

    def test_an_older_lockfile_version_is_an_error(self) -> None:
        self.assertRaises(ValueError, express_gateway.lock_pins, LOCK.replace("'9.0'", "'6.0'"))

    def test_flow_mappings_and_lists_are_read(self) -> None:
        lock = express_gateway.parse_lock_yaml(LOCK)
        self.assertEqual(lock["packages"]["express@4.22.1"]["resolution"], "{integrity: sha512-BBBB==}")
        self.assertEqual(
            lock["snapshots"]["http-proxy-middleware@3.0.5"]["transitivePeerDependencies"], ["supports-color"]
        )
        self.assertEqual(lock["snapshots"]["ms@2.1.3"], {})


class PinnedPackageJsonTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.package = express_gateway.pinned_package_json(PACKAGE, express_gateway.lock_pins(LOCK))

    def test_ranges_become_the_locks_versions(self) -> None:
        self.assertEqual(self.package["dependencies"]["express"], "4.22.1")
        self.assertEqual(self.package["dependencies"]["express-rate-limit"], "7.5.1")
        self.assertEqual(self.package["devDependencies"], {"@types/node": "22.19.11"})
        self.assertEqual(self.package["scripts"], {"build": "tsc"})

    def test_transitive_packages_at_one_version_are_overridden(self) -> None:
        self.assertEqual(
            self.package["overrides"],
            {"follow-redirects": "1.15.11", "qs": "6.14.2", "undici-types": "6.21.0"},
        )

    def test_the_original_is_left_alone(self) -> None:
        self.assertEqual(PACKAGE["dependencies"]["express"], "^4.21.1")

    def test_a_dependency_the_lock_lacks_is_an_error(self) -> None:
        package = dict(PACKAGE, dependencies=dict(PACKAGE["dependencies"], zod="^3.24.1"))
        self.assertRaises(ValueError, express_gateway.pinned_package_json, package, express_gateway.lock_pins(LOCK))


class MismatchTests(SynchronousTestCase):
    def test_an_install_as_locked_has_no_mismatch(self) -> None:
        installed = express_gateway.installed_versions({"packages": {
            "": {},
            "node_modules/express": {"version": "4.22.1"},
            "node_modules/express-rate-limit": {"version": "7.5.1"},
            "node_modules/http-proxy-middleware": {"version": "3.0.5"},
            "node_modules/@types/node": {"version": "22.19.11"},
            "node_modules/debug": {"version": "4.4.3"},
            "node_modules/express/node_modules/debug": {"version": "2.6.9"},
        }})
        self.assertEqual(installed["debug"], {"2.6.9", "4.4.3"})
        self.assertEqual(express_gateway.lock_mismatches(installed, express_gateway.lock_pins(LOCK)), [])

    def test_a_version_outside_the_lock_is_named(self) -> None:
        installed = express_gateway.installed_versions({"packages": {
            "node_modules/express": {"version": "4.22.1"},
            "node_modules/express-rate-limit": {"version": "7.5.1"},
            "node_modules/http-proxy-middleware": {"version": "3.0.5"},
            "node_modules/@types/node": {"version": "22.19.11"},
            "node_modules/qs": {"version": "6.14.0"},
        }})
        self.assertEqual(
            express_gateway.lock_mismatches(installed, express_gateway.lock_pins(LOCK)),
            ["qs 6.14.0 installed, the lock has 6.14.2"],
        )

    def test_a_missing_direct_dependency_is_named(self) -> None:
        installed = express_gateway.installed_versions({"packages": {
            "node_modules/express": {"version": "4.22.1"},
            "node_modules/express-rate-limit": {"version": "7.5.1"},
            "node_modules/@types/node": {"version": "22.19.11"},
        }})
        self.assertEqual(
            express_gateway.lock_mismatches(installed, express_gateway.lock_pins(LOCK)),
            ["http-proxy-middleware 3.0.5 (dependencies) is not installed"],
        )
