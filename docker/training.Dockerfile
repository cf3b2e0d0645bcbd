# syntax=docker/dockerfile:1
# Offline training and export, and the one-shot step that builds the default
# models into a model repository. It has torch (CPU build) and runs as a
# non-root user. Build from the repository root:
#   docker build -f docker/training.Dockerfile -t visionserve/training:0.1.0 .
FROM python:3.11.14-slim-bookworm AS build
# The CPU builds of torch and torchvision. PyPI's Linux torch wheels are CUDA
# builds of several GB. pip takes 2.14.1+cpu from this index for torch==2.14.1,
# because a local version label ranks above the plain release.
# NOTE: this image was not built here (no Docker engine on the development
# machines), so the CPU wheel of that exact release is assumed to exist.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
WORKDIR /src
RUN python -m venv /opt/venv
COPY docker/requirements/train.txt /tmp/constraints.txt
COPY pyproject.toml README.md ./
COPY services ./services
COPY training ./training
RUN /opt/venv/bin/pip install --no-cache-dir --extra-index-url "${TORCH_INDEX_URL}" \
        -c /tmp/constraints.txt ".[train]" \
    && /opt/venv/bin/pip uninstall --yes pip \
    && /opt/venv/bin/python -m compileall -q /opt/venv

FROM python:3.11.14-slim-bookworm
# OpenCV, which ultralytics imports, links libGL and GLib. Docker gives a new
# named volume the owner of the folder it is mounted on, so the non-root user
# can write models to a volume at /models.
# NOTE: Debian replaces these versions with security updates; bump them when
# the build reports that a version is not found.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1=1.6.0-1 libglib2.0-0=2.74.6-2+deb12u9 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 visionserve \
    && useradd --system --uid 10001 --gid visionserve --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin visionserve \
    && mkdir /models && chown visionserve:visionserve /models
COPY --from=build /opt/venv /opt/venv
# ultralytics and matplotlib write settings and caches below these folders,
# which a read-only root file system leaves writable only under /tmp.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    YOLO_OFFLINE=1 \
    HF_HUB_OFFLINE=1 \
    ORT_DISABLE_TELEMETRY=1 \
    YOLO_CONFIG_DIR=/tmp/ultralytics \
    MPLCONFIGDIR=/tmp/matplotlib
WORKDIR /tmp
USER 10001:10001
# A batch job with no HTTP endpoint to probe.
HEALTHCHECK NONE
CMD ["python", "-m", "training.classification.build_defaults", "--repository", "/models", "--runs-dir", "/tmp/runs"]
