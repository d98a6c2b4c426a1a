#!/bin/bash
# Build the certreconcile image with buildah from a base bootstrapped here, then run it (`make image`).
#
# No image registry is needed: the base is a Debian rootfs made by mmdebstrap from the Debian mirror
# apt uses, imported into buildah's storage. buildah runs rootful with the vfs storage driver and chroot
# isolation (no overlay mounts, no user namespaces needed). Steps and their times go to stderr.
#
# Environment: IMAGE (tag), BASE_IMAGE (skip the bootstrap: use this image as BASE), DEBIAN_SUITE,
# DEBIAN_MIRROR, PIP_INDEX_URL, VERSION, WORK (scratch directory, kept for the next run's base tarball).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
IMAGE=${IMAGE:-localhost/certreconcile:dev}
DEBIAN_SUITE=${DEBIAN_SUITE:-bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PIP_INDEX_URL=${PIP_INDEX_URL:-$(pip3 config get global.index-url 2>/dev/null || echo https://pypi.org/simple)}
VERSION=${VERSION:-}
# The CA bundle pip trusts here (pip's `cert` setting), mounted read-only into the build's RUN steps only.
HOST_CA_BUNDLE=${HOST_CA_BUNDLE:-${PIP_CERT:-$(pip3 config get global.cert 2>/dev/null || true)}}
WORK=${WORK:-$ROOT/build/image}
BUILDAH=(buildah --storage-driver vfs)
mkdir -p "$WORK"

step() { printf '== %s (%ss)\n' "$1" "$SECONDS" >&2; }

if [ -z "${BASE_IMAGE:-}" ]; then
  BASE_IMAGE=localhost/certreconcile-base:$DEBIAN_SUITE
  if ! "${BUILDAH[@]}" inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
    if [ ! -s "$WORK/base.tar" ]; then
      step "bootstrapping $DEBIAN_SUITE from $DEBIAN_MIRROR (python3, python3-venv, apt)"
      mmdebstrap --quiet --variant=apt --include=python3,python3-venv,ca-certificates \
        --format=tar "$DEBIAN_SUITE" "$WORK/base.tar.part" "$DEBIAN_MIRROR"
      mv "$WORK/base.tar.part" "$WORK/base.tar"
    fi
    step "importing the rootfs as $BASE_IMAGE"
    ctr=$("${BUILDAH[@]}" from scratch)
    "${BUILDAH[@]}" add "$ctr" "$WORK/base.tar" /
    "${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
    "${BUILDAH[@]}" commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null
  fi
fi

ca_args=()
if [ -n "$HOST_CA_BUNDLE" ] && [ -r "$HOST_CA_BUNDLE" ]; then
  ca_args=(--volume "$HOST_CA_BUNDLE:/run/host-ca.crt:ro" --build-arg PIP_CERT=/run/host-ca.crt)
fi
step "building $IMAGE from $BASE_IMAGE"
"${BUILDAH[@]}" bud --isolation chroot --layers=false "${ca_args[@]}" \
  --build-arg "BASE=$BASE_IMAGE" --build-arg "PIP_INDEX_URL=$PIP_INDEX_URL" --build-arg "VERSION=$VERSION" \
  -f "$ROOT/Containerfile" -t "$IMAGE" "$ROOT"
"${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true  # the previous build's image, now untagged
"${BUILDAH[@]}" images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$IMAGE" >&2
step "built"
