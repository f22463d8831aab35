# threatintel: the HTTP API, with MCP mounted at /mcp, as a small image that runs as a non-root
# user and can run on a read-only root filesystem (only /tmp, /data/cache and /data/reports need
# to be writable).
#
#   docker build -t threatintel:latest .
#   podman build --format docker -t threatintel:latest .   (OCI format would drop HEALTHCHECK)
#
# BASE_IMAGE may be any Debian-like image with python3 (3.11 or newer) and its venv module: the
# official slim Python image by default, or a Debian base whose Python comes from Debian's own
# packages (python3, python3-venv), as the test suite builds it with debootstrap. Both stages use
# `python3 -m venv` and never name /usr/local/bin, so either kind of base works.
ARG BASE_IMAGE=python:3.14-slim-trixie

# ---- build: the project and its dependencies in a self-contained venv ------------------------
FROM ${BASE_IMAGE} AS build

# The user and the volume directories are made here and copied into the runtime stage, which
# runs no command at all (see there). --no-log-init: with a uid this high, useradd would
# otherwise grow a huge sparse /var/log/faillog.
RUN groupadd --system --gid 10001 threatintel \
    && useradd --system --no-log-init --uid 10001 --gid 10001 --home-dir /data \
       --no-create-home --shell /usr/sbin/nologin threatintel \
    && mkdir -p /data/cache /data/reports \
    && chown -R 10001:10001 /data

WORKDIR /src
# The dependencies first, in a layer of their own, read from pyproject.toml (tomllib: Python
# 3.11+): a change to our code then rebuilds in seconds instead of reinstalling all of them.
COPY pyproject.toml ./
RUN python3 -m venv /opt/venv \
    && python3 -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" > requirements.txt \
    && /opt/venv/bin/python -m pip install --no-cache-dir --disable-pip-version-check -r requirements.txt

# Then the project itself, a plain (not editable) install: pip builds the wheel from source.
# pip and setuptools leave the finished venv: the service never installs anything, and an
# installer in the image is weight and attack surface. The bytecode pip compiled stays on
# purpose: the root filesystem may be read-only, and it saves time at every start.
COPY README.md ./
COPY src ./src
RUN /opt/venv/bin/python -m pip install --no-cache-dir --disable-pip-version-check --no-deps . \
    && /opt/venv/bin/python -m pip check \
    && /opt/venv/bin/python -m pip uninstall --yes --disable-pip-version-check pip setuptools

# ---- runtime: the base image plus the user, the volume directories and the venv ---------------
# No RUN here: the stage is the base and three copies, so nothing a build step leaves behind
# (pip's files, build-time mounts of the builder's pip configuration) can reach the image.
FROM ${BASE_IMAGE} AS runtime

LABEL org.opencontainers.image.title="threatintel" \
      org.opencontainers.image.description="Threat-intelligence enrichment: HTTP API with MCP at /mcp" \
      org.opencontainers.image.licenses="MIT"

# uid/gid 10001, fixed so volume ownership and Kubernetes' runAsUser/fsGroup can name it. The
# volume directories belong to it, so fresh named volumes start out writable by it. The venv
# stays root's: the service cannot change its own code.
COPY --from=build /etc/passwd /etc/group /etc/shadow /etc/gshadow /etc/
COPY --from=build --chown=10001:10001 /data /data
COPY --from=build /opt/venv /opt/venv

# PATH is spelled out rather than extended from the base's: a base imported from a debootstrap
# tarball has no ENV at all. PYTHONDONTWRITEBYTECODE: nothing to write on a read-only root.
# PYTHONUNBUFFERED: log lines reach the engine's log collector as they are written.
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    CACHE_DIR=/data/cache \
    REPORTS_DIR=/data/reports \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

WORKDIR /data
VOLUME ["/data/cache", "/data/reports"]
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 8000
# Slim images have no curl: the venv's Python asks /health itself and exits non-zero unless the
# answer is 200 (a refused connection, a timeout or an error status raise). Proxies are bypassed
# on purpose: an HTTP_PROXY given to the app must not route the probe away from 127.0.0.1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/opt/venv/bin/python", "-c", "import sys, urllib.request as u; r = u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:8000/health', timeout=4); sys.exit(r.status != 200)"]

# Off loopback the server refuses to start without THREATINTEL_API_TOKEN (16 characters or
# more): pass it, and the provider keys, from the environment or a secret.
CMD ["threatintel", "server", "--transport", "http", "--host", "0.0.0.0", "--port", "8000"]
