# syntax=docker/dockerfile:1
# pacs-health-agent image: a virtualenv with the agent wheel on python:3.13-slim, run as 65532.
#
#   docker build -t pacs-health-agent:0.1.0 .
#   docker run --rm -p 9887:9887 -e SECTRA_API_KEY=... \
#     -v "$PWD/config.yaml:/etc/pacs-health-agent/config.yaml:ro" --read-only --tmpfs /tmp \
#     pacs-health-agent:0.1.0
#
# tests/test_image.py runs the builder's pip line without a Docker engine (on the files COPY'd
# here), then the installed agent and this HEALTHCHECK; it also checks that every pinned
# dependency has a wheel for this Python.
# Python 3.13: from 3.13 the ssl module hands out the verified certificate chain publicly
# (SSLSocket.get_verified_chain), so the certificate-expiry metrics cover the whole chain; on
# 3.11/3.12 the agent falls back to a private API or the leaf. Every pin has a cp313 or abi3
# wheel for x86_64 (hdrhistogram has none for arm64: hence the compiler in the builder).
# Pin the base by digest as well (python:3.13.13-slim-trixie@sha256:...) in a release pipeline.
ARG PYTHON_IMAGE=python:3.13.13-slim-trixie

# ---- builder: wheel + virtualenv with every dependency --------------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
# A C compiler, only here, for dependencies that have no wheel for the build platform
# (hdrhistogram on arm64, for example). None of it reaches the final image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY agent/ agent/
COPY probes/ probes/
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv --without-pip /opt/pacs-health-agent \
 && pip --python /opt/pacs-health-agent/bin/python install /wheels/*.whl

# ---- final: runtime only ---------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="pacs-health-agent" \
      org.opencontainers.image.description="Health and latency monitoring agent for Sectra/DICOM PACS (Prometheus :9887, OTLP)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# No installer in the runtime image; the agent's own venv has what it needs.
RUN python -m pip uninstall -y -q pip setuptools wheel 2>/dev/null || true; \
    groupadd --system --gid 65532 agent \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin agent \
 && mkdir -p /etc/pacs-health-agent
COPY --from=builder /opt/pacs-health-agent /opt/pacs-health-agent
ENV PATH=/opt/pacs-health-agent/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AGENT_HEALTHCHECK_URL=http://127.0.0.1:9887/-/healthy
# The agent writes nothing to disk: run with a read-only root filesystem and a tmpfs on /tmp.
USER 65532:65532
EXPOSE 9887
# Liveness (the process serves HTTP), not /health, which is 503 whenever a PACS is unhealthy.
# Set AGENT_HEALTHCHECK_URL when --listen moves the port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('AGENT_HEALTHCHECK_URL', 'http://127.0.0.1:9887/-/healthy'), timeout=4)"]
ENTRYPOINT ["agent"]
CMD ["run", "--config", "/etc/pacs-health-agent/config.yaml"]
