# syntax=docker/dockerfile:1
# The gateway: the `serve` extra only (no torch, no models), run as a non-root
# user that can run with a read-only root file system. Build from the
# repository root:
#   docker build -f docker/gateway.Dockerfile -t visionserve/gateway:0.1.0 .
FROM python:3.11.14-slim-bookworm AS build
WORKDIR /src
RUN python -m venv /opt/venv
COPY docker/requirements/serve.txt /tmp/constraints.txt
COPY pyproject.toml README.md ./
COPY services ./services
# The constraints pin every distribution to the version the tests ran against.
# The project itself is installed without -e, so that /src is not needed later.
RUN /opt/venv/bin/pip install --no-cache-dir -c /tmp/constraints.txt ".[serve]" \
    && /opt/venv/bin/pip uninstall --yes pip \
    && /opt/venv/bin/python -m compileall -q /opt/venv

FROM python:3.11.14-slim-bookworm
RUN groupadd --system --gid 10001 visionserve \
    && useradd --system --uid 10001 --gid visionserve --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin visionserve
COPY --from=build /opt/venv /opt/venv
# The .pyc files were written at build time, so a read-only root file system
# is enough. MALLOC_ARENA_MAX is set here so that services.serve does not
# re-execute itself to set it.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MALLOC_ARENA_MAX=2
WORKDIR /tmp
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-m", "services.healthcheck", "http://127.0.0.1:8000/healthz"]
CMD ["python", "-m", "services.serve", "gateway", "--host", "0.0.0.0", "--port", "8000"]
