# syntax=docker/dockerfile:1
# obsfs-csi: the CSI plugin (controller and node) and the obsfs mounts it starts.
#
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/obsfs-csi:0.1.0 --push .
#
# Pure Python plus two small C extensions built from source (pyfuse3 against libfuse3, and
# crcmod), so both architectures build natively or under emulation without cross toolchains.
# Both stages use the same base image, so the virtualenv built in the first runs unchanged in
# the second. The system packages are the ones scripts/install.sh installs; tests/deploy
# checks that the two lists agree.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- build: compilers and headers, then a self-contained virtualenv in /opt/obsfs ------------
FROM ${PYTHON_IMAGE} AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libfuse3-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/obsfs
WORKDIR /src
# Exactly the versions and files (sha256) of the lock, as scripts/install.sh does: the build tools
# first, then the runtime packages, built without isolation so that nothing comes from outside it.
COPY requirements/build.txt requirements/runtime.txt ./requirements/
RUN /opt/obsfs/bin/pip install --no-deps --require-hashes -r requirements/build.txt \
 && /opt/obsfs/bin/pip install --no-deps --require-hashes --no-build-isolation -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY obsfs ./obsfs
COPY csi ./csi
# A regular (not editable) install: the virtualenv must not point back into /src.
RUN /opt/obsfs/bin/pip install --no-deps --no-build-isolation /src

# -- runtime: libfuse3 and fusermount3, the virtualenv, nothing from the build ---------------
FROM ${PYTHON_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends fuse3 tini \
 && rm -rf /var/lib/apt/lists/*
COPY --from=builder /opt/obsfs /opt/obsfs
ENV PATH=/opt/obsfs/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# Fail the build, not the first mount, if a runtime library is missing: pyfuse3 loads libfuse3.
RUN python -c "import pyfuse3, csi.main" && obsfs-csi --help >/dev/null && obsfs --help >/dev/null \
 && obsfs-mounter --help >/dev/null
LABEL org.opencontainers.image.title="obsfs-csi" \
      org.opencontainers.image.description="CSI driver for Huawei OBS and S3-compatible buckets, mounted with obsfs" \
      org.opencontainers.image.licenses="Apache-2.0"
# Root: the node service mounts (mount(2), /dev/fuse); the controller runs as any user.
# tini as PID 1 reaps the obsfs daemons: each detaches from the `obsfs mount` that started it, is
# re-parented to PID 1, and would otherwise stay a zombie after its unmount. The mounter
# DaemonSet runs the same image as `tini -- obsfs-mounter`, which is where the daemons live.
ENTRYPOINT ["tini", "--", "obsfs-csi"]
