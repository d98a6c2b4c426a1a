#!/bin/bash
# Run the image built by build-image.sh: `certreconcile --version`, then the demo (README quick start)
# on the embedded PostgreSQL, as the image's non-root user, with buildah run (chroot isolation).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
IMAGE=${IMAGE:-localhost/certreconcile:dev}
BUILDAH=(buildah --storage-driver vfs)
RUN=("${BUILDAH[@]}" run --isolation chroot)
demo=$(mktemp -d)
ctr=$("${BUILDAH[@]}" from --quiet "$IMAGE")
cleanup() {
  "${RUN[@]}" --volume "$demo:/work" "$ctr" -- certreconcile db stop >/dev/null 2>&1 || true
  "${BUILDAH[@]}" rm "$ctr" >/dev/null
  rm -rf "$demo"
}
trap cleanup EXIT

"${RUN[@]}" "$ctr" -- certreconcile --version
user=$("${RUN[@]}" "$ctr" -- id -u)
[ "$user" != 0 ] || { echo "the image runs as root" >&2; exit 1; }
for compiler in gcc cc c++ g++; do
  if "${RUN[@]}" "$ctr" -- sh -c "command -v $compiler" >/dev/null 2>&1; then
    echo "the final image holds a compiler: $compiler" >&2
    exit 1
  fi
done

# The demo: the example desired state mounted at /work (CERTRECONCILE_DIR), the state in the volume.
cp -r "$ROOT/examples/desired-state/." "$demo/"
rm -rf "$demo/.certreconcile"
chown -R "$user" "$demo"
start=$SECONDS
"${RUN[@]}" --volume "$demo:/work" "$ctr" -- certreconcile apply --auto-approve | tee "$demo.apply"
grep -q "Apply complete: 4 done, 0 skipped, 0 failed." "$demo.apply"
"${RUN[@]}" --volume "$demo:/work" "$ctr" -- certreconcile status --fail-on expired,unverified,pending
rm -f "$demo.apply"
echo "demo in the image: $((SECONDS - start))s" >&2
"${BUILDAH[@]}" images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$IMAGE"
