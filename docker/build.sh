#!/usr/bin/env bash
# Build the mmctr-kit image with docker (or podman when there is no docker).
#   [VARIANT=cu13|cu12] docker/build.sh [IMAGE] [extra `build` options...]
#   (IMAGE default: mmctr-kit:latest for cu13, mmctr-kit:cu12 for cu12)
# VARIANT (docker/variants.tsv): cu13 (default) = requirements.lock, torch 2.14.1, CUDA 13.0, driver >= 580;
#   cu12 = requirements-cu12.lock, torch 2.4.1, CUDA 12.1, driver >= 530.
# Build ARGs are passed through from the environment when set:
#   BASE_IMAGE       the variant's CUDA base (passed as BASE_IMAGE_CU13 or BASE_IMAGE_CU12); default
#                    from docker/variants.tsv, e.g. nvidia/cuda:13.0.0-base-ubuntu22.04
#   TEXT_MODEL       sentence-transformers id fetched at build time (default all-MiniLM-L6-v2, bundled)
#   CLIP_MODEL, CLIP_PRETRAINED   open_clip weights fetched at build time (e.g. ViT-L-14 laion2b_s32b_b82k)
#   GIT_COMMIT       default: `git rev-parse HEAD` (+ -dirty)
#   PYTHON, PIP_VERSION, MMCTR_UID, PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS, PIP_NO_INDEX
# CONTAINER_ENGINE=docker|podman picks the engine.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VARIANT=${VARIANT:-cu13}
if ! awk -v v="$VARIANT" '!/^[[:space:]]*#/ && $1 == v { found = 1 } END { exit !found }' "$ROOT/docker/variants.tsv"; then
    echo "build.sh: error: unknown VARIANT '$VARIANT': one of $(awk '!/^[[:space:]]*#/ && NF { printf "%s ", $1 }' "$ROOT/docker/variants.tsv")(docker/variants.tsv)" >&2
    exit 2
fi
DEFAULT_IMAGE=mmctr-kit:latest
[ "$VARIANT" = cu13 ] || DEFAULT_IMAGE=mmctr-kit:$VARIANT
IMAGE=${1:-$DEFAULT_IMAGE}
[ $# -gt 0 ] && shift
# BASE_IMAGE is the base of the variant being built
VARIANT_UPPER=$(echo "$VARIANT" | tr '[:lower:]' '[:upper:]')
if [ -n "${BASE_IMAGE:-}" ]; then
    printf -v "BASE_IMAGE_$VARIANT_UPPER" '%s' "$BASE_IMAGE"
fi

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
for var in VARIANT GIT_COMMIT BASE_IMAGE_CU13 BASE_IMAGE_CU12 TEXT_MODEL CLIP_MODEL CLIP_PRETRAINED PYTHON PIP_VERSION MMCTR_UID \
           PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_NO_INDEX; do
    if [ -n "${!var:-}" ]; then
        args+=(--build-arg "$var=${!var}")
    fi
done

echo "build.sh: $ENGINE build -t $IMAGE ${args[*]} $* ($ROOT)" >&2
t0=$SECONDS
"$ENGINE" build -f "$ROOT/docker/Dockerfile" -t "$IMAGE" "${args[@]}" "$@" "$ROOT"
echo "build.sh: built $IMAGE (variant $VARIANT) in $((SECONDS - t0)) s" >&2
"$ENGINE" image inspect --format '{{.Size}}' "$IMAGE" 2>/dev/null \
    | awk '{printf "build.sh: image size %.2f GB\n", $1 / 1e9}' >&2 || true
