# syntax=docker/dockerfile:1
# The drift monitor job: the `monitor` extra (the serving code and scipy, no
# torch), run as a non-root user that can run with a read-only root file
# system. Build from the repository root:
#   docker build -f docker/monitor.Dockerfile -t visionserve/monitor:0.1.0 .
FROM python:3.11.14-slim-bookworm AS build
WORKDIR /src
RUN python -m venv /opt/venv
COPY docker/requirements/monitor.txt /tmp/constraints.txt
COPY pyproject.toml README.md ./
COPY services ./services
COPY monitoring ./monitoring
RUN /opt/venv/bin/pip install --no-cache-dir -c /tmp/constraints.txt ".[monitor]" \
    && /opt/venv/bin/pip uninstall --yes pip \
    && /opt/venv/bin/python -m compileall -q /opt/venv

FROM python:3.11.14-slim-bookworm
# Docker gives a new named volume the owner of the folder it is mounted on, so
# the non-root user can write reports to a volume at /reports.
RUN groupadd --system --gid 10001 visionserve \
    && useradd --system --uid 10001 --gid visionserve --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin visionserve \
    && mkdir /reports && chown visionserve:visionserve /reports
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VS_MONITOR_MODEL_REPOSITORY=/models \
    VS_MONITOR_REPORT_DIR=/reports
WORKDIR /tmp
USER 10001:10001
# The job serves no HTTP endpoint to probe. A run that stops pushing its
# results shows up in Prometheus as stale Pushgateway metrics instead.
HEALTHCHECK NONE
CMD ["python", "-m", "monitoring.drift", "--loop", "--interval", "300"]
