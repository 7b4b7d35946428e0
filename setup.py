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
        "twisted[tls]>=24.7.0",
        "treq>=24.9.1",
        "klein>=24.8.0",
        # 2.13: crit header validation (CVE-2026-32597) and the b64=false fix
        "pyjwt>=2.13.0",
        "service-identity>=24.1.0",
        "pyopenssl>=24.2.1",
        "incremental>=24.7.2",
        "attrs>=23.1.0",
        # Prometheus metrics (METRICS_PORT): the exposition format, the
        # process collector, and a twisted.web MetricsResource to serve it.
        "prometheus_client>=0.20.0",
    ],
    extras_require={
        # trial comes with twisted; the tests make their certificates with
        # cryptography directly.
        "test": ["cryptography"],
    },
    entry_points={
        "console_scripts": [
            "qeetgw-echo = qeetgw_dev.echo:main",
        ],
    },
)
