# Container images for the API (default target, the LAST stage) and the local development issuer
# (`--target dev-issuer`, never used in production).
#
#   docker build -t flask-auth0-api .                                  # the API
#   docker build --target dev-issuer -t flask-auth0-api-dev-issuer .   # DEVELOPMENT ONLY issuer
#
# Both share one builder venv, so the issuer costs one extra COPY and never enters the API image:
# the API stage copies only service/ and gunicorn.conf.py.

# ---- builder: a venv with the pinned runtime requirements (no compilers reach the final image) ----
FROM python:3.11-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# gunicorn's C HTTP parser (gunicorn_h1c) exists on PyPI as source only: built here from its
# hashed sdist with hashed build tools, in a throwaway venv; only the wheel enters /opt/venv, and
# the compiler stays in this stage. Debian's gcc/libc6-dev/python3-dev float with bookworm's
# security updates (an exact pin would stop building at the next point release).
COPY requirements-build.txt requirements-h1c.txt /tmp/
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev python3-dev \
    && rm -rf /var/lib/apt/lists/* \
    && python -m venv /tmp/build \
    && /tmp/build/bin/pip install --no-cache-dir --require-hashes --only-binary=:all: \
       -r /tmp/requirements-build.txt \
    && /tmp/build/bin/pip wheel --no-cache-dir --require-hashes --no-build-isolation --no-deps \
       --no-binary=gunicorn_h1c -r /tmp/requirements-h1c.txt -w /tmp/wheels \
    && pip install --no-cache-dir --no-index --no-deps /tmp/wheels/gunicorn_h1c-*.whl \
    && rm -rf /tmp/build /tmp/wheels

COPY requirements.txt /tmp/requirements.txt
# Every package, transitive ones too, pinned with its hashes (requirements.txt, from bin/lock):
# pip refuses anything else. Wheels only: slim has no compiler, and a source build would mean an
# unreviewed build step. compileall: the root filesystem is read-only at run time, so .pyc files
# must exist already.
RUN pip install --no-cache-dir --require-hashes --only-binary=:all: -r /tmp/requirements.txt \
    && pip check \
    && python -m compileall -q /opt/venv/lib

# Last step of the builder: the venv's own installers go. Nothing installs at run time, and
# pip/setuptools/wheel in the runtime image would only be attack surface and scanner findings.
# (-qq: no "Skipping wheel as it is not installed" warning where the venv has none.)
RUN python -m pip uninstall --yes -qq pip setuptools wheel

# ---- runtime-base: what both images share (venv, numeric non-root user, Python env) ----
FROM python:3.11-slim-bookworm AS runtime-base

# A numeric uid/gid so Kubernetes' runAsNonRoot can verify it; --no-log-init keeps the image
# free of a huge sparse lastlog file for a high uid.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --no-log-init --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin app

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /app

# ---- dev-issuer: DEVELOPMENT ONLY token issuer for docker compose / the dev overlay ----
FROM runtime-base AS dev-issuer

COPY dev_issuer/ /app/dev_issuer/
# The issuer checks DPoP proofs at its token endpoint with the API's own proof checks.
COPY service/ /app/service/
RUN python -m compileall -q /app/dev_issuer /app/service

ENV DEV_ISSUER_HOST=0.0.0.0 \
    DEV_ISSUER_PORT=3011

LABEL org.opencontainers.image.title="flask-auth0-api-dev-issuer" \
      org.opencontainers.image.description="DEVELOPMENT ONLY OAuth 2.0 client-credentials issuer for flask-auth0-api"

USER 10001:10001
EXPOSE 3011
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=5 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('DEV_ISSUER_PORT', '3011'), timeout=2)"]
CMD ["python", "-m", "dev_issuer"]

# ---- api: the production image (default target) ----
FROM runtime-base AS api

# prometheus_client picks multiprocess mode when it is first imported, so the directory must be in
# the environment of the gunicorn master from the start. It lives under /tmp because /tmp is the
# one writable path of a `--read-only --tmpfs /tmp` container; gunicorn's on_starting wipes it.
ENV PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus-multiproc \
    WEB_CONCURRENCY=2

COPY gunicorn.conf.py /app/
COPY service/ /app/service/
RUN python -m compileall -q /app/service /app/gunicorn.conf.py

# Build metadata last, so a new revision or date does not invalidate the layers above.
ARG VERSION=0.0.0-dev
ARG REVISION=unknown
ARG CREATED=1970-01-01T00:00:00Z
ARG SOURCE=https://example.invalid/flask-auth0-api

# A RUN that reads the build args: only a RUN's cache key includes their values, so without it a
# layer cache would hand back the ENV and LABEL layers of an earlier build with other values
# (https://github.com/containers/buildah/issues/5501). Prints the stamp into the build log.
RUN echo "build info: version=${VERSION} revision=${REVISION} created=${CREATED}"
# service_build_info{version,revision} reads these at run time.
ENV SERVICE_VERSION="${VERSION}" \
    SERVICE_REVISION="${REVISION}"

LABEL org.opencontainers.image.title="flask-auth0-api" \
      org.opencontainers.image.description="Flask API protected by Auth0 JWT access tokens" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm"

USER 10001:10001
EXPOSE 3010
# Liveness only (no issuer dependency); docker/compose use it, Kubernetes ignores it.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '3010'), timeout=2)"]
# Exec form: gunicorn is PID 1 and receives SIGTERM itself (graceful shutdown).
CMD ["gunicorn", "-c", "gunicorn.conf.py"]
