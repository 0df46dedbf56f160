# syntax=docker/dockerfile:1
# nexus-operator image: the Python package and its runtime dependencies, nothing else.
#   docker build -t nexus-operator:dev .
# Runs as a non-root user with a read-only root filesystem (the chart mounts /tmp as emptyDir).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN python -m pip wheel --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# xds-protos ships an older copy of opentelemetry/proto/*: reinstall opentelemetry-proto last
# so the OTLP exporter gets its own files (Envoy's ext_proc stubs do not use them).
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install "$(ls /wheels/*.whl)[tracing]" \
 && python -m pip install --no-deps --force-reinstall "opentelemetry-proto==$(python -c \
      'import importlib.metadata as m; print(m.version("opentelemetry-proto"))')" \
 && groupadd --system --gid 65532 nexus \
 && useradd --system --uid 65532 --gid nexus --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin nexus
USER 65532:65532
EXPOSE 50051 9090 8080
ENTRYPOINT ["nexus-operator"]
CMD ["run"]
