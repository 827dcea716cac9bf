# csi-vduse container image: one image for the node plugin (DaemonSet) and the central
# controller that answers ControllerExpandVolume (Deployment).
#
#   docker build -t csi-vduse .            # or: buildah build -t csi-vduse .
#
# Behind a TLS-intercepting proxy, pip inside the build needs that proxy's CA. Pass the
# host's bundle as a build secret and name it with PIP_CERT; the bundle is mounted only
# for the pip step and never lands in a layer:
#
#   docker build --secret id=pip-ca,src=/etc/ssl/certs/ca-certificates.crt \
#                --build-arg PIP_CERT=/run/secrets/pip-ca -t csi-vduse .
#
# An apt proxy, if the host uses one, goes in APT_PROXY the same way (scripts/build-image.sh
# reads both from the host's configuration). Without them the build uses the image's own
# apt sources and PyPI directly.
#
# The default user is unprivileged: nothing in the image needs root to start, and the
# central controller runs as that user. The node plugin creates VDUSE devices, talks vdpa
# netlink in the host network namespace, formats and mounts; the Helm chart runs that
# container privileged as root (securityContext runAsUser 0, privileged true).

ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS builder
ARG APT_PROXY=""
ARG PIP_CERT=""
# cffi compiles the VDUSE uAPI module against <linux/vduse.h> from linux-libc-dev, and the
# RBD backend against librbd and librados.
RUN apt-get ${APT_PROXY:+-o Acquire::http::Proxy=$APT_PROXY} update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get ${APT_PROXY:+-o Acquire::http::Proxy=$APT_PROXY} \
      install -y -q --no-install-recommends \
      python3 python3-venv python3-dev gcc libc6-dev linux-libc-dev liburing-dev \
      librbd-dev librados-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/csi-vduse
WORKDIR /src
# .dockerignore admits only the packaging files and the package sources (proto/ included).
COPY . ./
RUN --mount=type=secret,id=pip-ca \
    PIP_CERT="${PIP_CERT}" PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    /opt/csi-vduse/bin/pip install -q --no-compile . \
  && cd / && /opt/csi-vduse/bin/python -c "import csi_vduse.vduse._uapi"

FROM ${BASE_IMAGE}
ARG APT_PROXY=""
# What the node plugin runs: mkfs/resize/fsck for ext4 and xfs, blkid/findmnt/mount from
# util-linux and mount, modprobe from kmod; librbd for devices on Ceph RBD images.
RUN apt-get ${APT_PROXY:+-o Acquire::http::Proxy=$APT_PROXY} update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get ${APT_PROXY:+-o Acquire::http::Proxy=$APT_PROXY} \
      install -y -q --no-install-recommends \
      python3 e2fsprogs xfsprogs util-linux mount kmod librbd1 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && useradd --system --uid 65532 --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin csi-vduse
COPY --from=builder /opt/csi-vduse /opt/csi-vduse
ENV PATH=/opt/csi-vduse/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
ENTRYPOINT ["csi-vduse"]
CMD ["--help"]
