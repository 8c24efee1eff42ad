# provider-router container image.
#
#   docker build -t provider-router .
#   docker run -p 8080:8080 -v provider-router-data:/data provider-router
#
# Two stages: the builder installs the project and its pinned dependencies into a virtualenv at
# /opt/venv; the runtime stage copies only that virtualenv onto a fresh slim base. No compiler,
# pip cache or source tree reaches the final image.

# --- builder -------------------------------------------------------------------------------------
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv

WORKDIR /src

# Dependencies first, so editing the code does not reinstall them: the whole tree from
# requirements.lock, each at its exact version and checked against its sha256 (a package that
# changed on the index, or one the lock does not name, stops the build).
COPY pyproject.toml README.md requirements.lock ./
RUN /opt/venv/bin/pip install --no-cache-dir --require-hashes -r requirements.lock

# Then the project itself (a regular, non-editable install: the code is copied into
# site-packages), a check that the console script starts, and pip/setuptools removed from the
# venv since nothing needs them at run time.
COPY router ./router
COPY providers ./providers
COPY schema ./schema
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps . \
    && /opt/venv/bin/provider-router --help > /dev/null \
    && /opt/venv/bin/python -m pip uninstall --yes pip setuptools

# --- runtime -------------------------------------------------------------------------------------
FROM python:3.11-slim

ARG APP_UID=10001
ARG APP_GID=10001

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PROVIDER_ROUTER_DATABASE_URL=sqlite:////data/provider-router.db \
    PROVIDER_ROUTER_REQUIRE_CLIENT_KEYS=true

# A fixed, unprivileged uid/gid, so a bind-mounted /data can be chowned to match (10001:10001).
RUN groupadd --gid "${APP_GID}" provider-router \
    && useradd --no-log-init --uid "${APP_UID}" --gid "${APP_GID}" --home-dir /data \
        --no-create-home --shell /usr/sbin/nologin provider-router \
    && mkdir -p /data \
    && chown "${APP_UID}:${APP_GID}" /data \
    && chmod 0750 /data

COPY --from=builder /opt/venv /opt/venv

# The SQLite database, the generated admin-token and the generated secret-key (which encrypts the
# provider credentials in the database) live here: back up secret-key with the database.
VOLUME ["/data"]
WORKDIR /data
USER ${APP_UID}:${APP_GID}

EXPOSE 8080

# python:*-slim has no curl; ask /health with the standard library (urlopen raises on non-2xx).
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4)"]

# The container listens on 0.0.0.0, so the proxy must not be open to whoever reaches the port:
# PROVIDER_ROUTER_REQUIRE_CLIENT_KEYS above makes /v1/chat/completions need a client key (or the
# admin token) from the first start; create keys with POST /v1/keys.

# uvicorn handles SIGTERM: in-flight requests finish and queued rows are written before exit.
STOPSIGNAL SIGTERM

ENTRYPOINT ["provider-router"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
