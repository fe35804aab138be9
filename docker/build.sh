#!/usr/bin/env bash
# Build the mmctr-kit image with docker (or podman when there is no docker).
#   docker/build.sh [IMAGE] [extra `build` options...]        (IMAGE default mmctr-kit:latest)
# Build ARGs are passed through from the environment when set:
#   BASE_IMAGE       default nvidia/cuda:13.0.0-base-ubuntu22.04 (see docker/Dockerfile)
#   TEXT_MODEL       sentence-transformers id fetched at build time (default all-MiniLM-L6-v2, bundled)
#   CLIP_MODEL, CLIP_PRETRAINED   open_clip weights fetched at build time (e.g. ViT-L-14 laion2b_s32b_b82k)
#   GIT_COMMIT       default: `git rev-parse HEAD` (+ -dirty)
#   PYTHON, PIP_VERSION, MMCTR_UID, PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS, PIP_NO_INDEX
# CONTAINER_ENGINE=docker|podman picks the engine.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
IMAGE=${1:-mmctr-kit:latest}
[ $# -gt 0 ] && shift

ENGINE=${CONTAINER_ENGINE:-}
if [ -z "$ENGINE" ]; then
    if command -v docker >/dev/null 2>&1; then ENGINE=docker
    elif command -v podman >/dev/null 2>&1; then ENGINE=podman
    else
        echo "build.sh: neither docker nor podman is installed" >&2
        exit 1
    fi
fi

# the kit's commit, recorded in the image (label + MMCTR_GIT_COMMIT): .git is not copied in
if [ -z "${GIT_COMMIT:-}" ] && GIT_COMMIT=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null); then
    git -C "$ROOT" diff --quiet HEAD 2>/dev/null || GIT_COMMIT="$GIT_COMMIT-dirty"
fi

args=()
for var in GIT_COMMIT BASE_IMAGE TEXT_MODEL CLIP_MODEL CLIP_PRETRAINED PYTHON PIP_VERSION MMCTR_UID \
           PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_NO_INDEX; do
    if [ -n "${!var:-}" ]; then
        args+=(--build-arg "$var=${!var}")
    fi
done

echo "build.sh: $ENGINE build -t $IMAGE ${args[*]} $* ($ROOT)" >&2
t0=$SECONDS
"$ENGINE" build -f "$ROOT/docker/Dockerfile" -t "$IMAGE" "${args[@]}" "$@" "$ROOT"
echo "build.sh: built $IMAGE in $((SECONDS - t0)) s" >&2
"$ENGINE" image inspect --format '{{.Size}}' "$IMAGE" 2>/dev/null \
    | awk '{printf "build.sh: image size %.2f GB\n", $1 / 1e9}' >&2 || true
