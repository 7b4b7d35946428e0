# qeetgw's image: the gateway in a virtualenv on a slim Python, run by an
# unprivileged user as twistd runs it in production (README: Two commands).
#
#   docker build -t qeetgw .
#   docker run --rm -p 4000:4000 -e JWT_SECRET=... qeetgw
#
# Nothing secret is built in: JWT_SECRET, REDIS_URL's password and the rest
# come from the environment when the container starts.

# Debian slim (glibc: the allocator setting of qeetgw/process/heap.py applies,
# as it would not with Alpine's musl), and the Python the tests and the
# benchmark ran on.  Both stages use the same image, so the virtualenv's
# interpreter link holds in the second.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: a virtualenv with qeetgw and its dependencies, nothing else ----
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN python -m venv /opt/qeetgw

WORKDIR /src
# Only what the package is built from (.dockerignore keeps the rest out of
# the context); setup.py reads README.md for the long description.
COPY pyproject.toml setup.py README.md ./
COPY qeetgw ./qeetgw
COPY qeetgw_dev ./qeetgw_dev
COPY twisted ./twisted

# A regular (not editable) install: the package and the plugin are copied
# into the virtualenv's site-packages, and /src is not needed after.  The
# dependencies are the newest releases setup.py allows, as with `make test`.
RUN /opt/qeetgw/bin/pip install --no-cache-dir /src

# Twisted keeps a cache of what each plugin directory holds
# (twisted/plugins/dropin.cache) and writes it at the first getPlugins().
# The runtime user cannot write into site-packages, so write it now; this
# also fails the build if twistd would not find the qeetgw plugin.
RUN /opt/qeetgw/bin/python -c "import sys; from twisted.application.service import IServiceMaker; from twisted.plugin import getPlugins; sys.exit(0 if 'qeetgw' in [p.tapname for p in getPlugins(IServiceMaker)] else 'no qeetgw plugin')" \
 && test -f /opt/qeetgw/lib/python*/site-packages/twisted/plugins/dropin.cache \
 && /opt/qeetgw/bin/twistd qeetgw --help > /dev/null

# --- run: the slim image and the virtualenv ---------------------------------
FROM ${PYTHON_IMAGE}

# A numeric user (runAsNonRoot can check it without reading /etc/passwd),
# with an entry of its own, so tools that look up the user find one.
RUN groupadd --system --gid 10001 qeetgw \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin qeetgw

COPY --from=build /opt/qeetgw /opt/qeetgw

# PYTHONUNBUFFERED: log lines reach `docker logs` as they are written (the
# JSON logger writes once per reactor turn anyway).  Bytecode was compiled
# at install; the root filesystem may be read-only.
ENV PATH=/opt/qeetgw/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=4000 \
    HOST=0.0.0.0

# An empty working directory: the gateway reads a .env from where it runs,
# and there is none here unless one is mounted.
WORKDIR /app

USER 10001:10001

# The public port; METRICS_PORT, when set, is another (9464 in
# deploy/kubernetes).
EXPOSE 4000

# For `docker run` and Compose (Kubernetes uses its own probes): liveness,
# with the Python the image has (no curl in a slim image).
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '4000'), timeout=2)"]

# twistd is PID 1: it handles SIGTERM itself (the drain of README: Shutdown,
# exit status 0) and reaps the workers it starts with --workers.
CMD ["twistd", "--nodaemon", "--pidfile=", "qeetgw"]
