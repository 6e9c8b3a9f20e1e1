# The refund-orchestrator image: `refunds worker` by default, `refunds sim` for the simulators.
#   docker build -t refund-orchestrator:0.1.0 .
# Two stages: the first builds a wheel of the project and a virtualenv holding it and its
# runtime dependencies (no dev extras); the second copies only that virtualenv. Plain
# Dockerfile syntax (no BuildKit-only features), so docker-compose 1.29 can build it too.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The same path as in the runtime stage: the venv's scripts name their interpreter by path.
RUN python -m venv /opt/venv
WORKDIR /src

# Dependencies first, read from pyproject.toml alone, so a code change reuses this layer.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && /opt/venv/bin/pip install --requirement /tmp/requirements.txt

# Then the project itself, as a wheel: a regular (non-editable) install.
COPY . .
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /tmp/wheels . \
    && /opt/venv/bin/pip install /tmp/wheels/*.whl


FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="refund-orchestrator" \
      org.opencontainers.image.description="Durable, exactly-once payment refunds on Temporal (Mews, Paynow)" \
      org.opencontainers.image.version="0.1.0"

RUN groupadd --system --gid 10001 refunds \
    && useradd --system --uid 10001 --gid refunds --create-home --home-dir /home/refunds \
        --shell /usr/sbin/nologin refunds

COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    REFUNDS_METRICS_PORT=9464

# No .env in the image (.dockerignore): settings come from the container's environment.
WORKDIR /home/refunds
USER 10001:10001

# 9464: the worker's Prometheus endpoint; 8700: `refunds sim`.
EXPOSE 9464 8700

# The worker stops on SIGTERM: it stops polling and lets running activities finish.
STOPSIGNAL SIGTERM

# Python only, no curl in the image: healthy while the metrics endpoint answers.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/metrics' % os.environ.get('REFUNDS_METRICS_PORT', '9464'), timeout=3)"]

ENTRYPOINT ["refunds"]
CMD ["worker"]
