#!/usr/bin/env bash
# Smoke test of docker/Dockerfile with podman/buildah and no container registry (`make docker-smoke`):
#   1. a local base image: Debian bookworm (python3.11) debootstrapped once, `podman import`ed
#   2. a wheelhouse of the variant's lock (pip download on the host, once), mounted into the build
#   3. build the image against that base (vfs storage, chroot isolation: works without a daemon)
#   4. run it: the demo on CPU, then the entrypoint's usage and clear failures (no data, no GPU)
#   5. check the zip the demo wrote: prediction.csv at its root, ID + Task1&2, one row per test row
# Needs root (debootstrap, rootful podman), podman, buildah, runc, debootstrap.
# Why a wheelhouse: a build container here reaches PyPI only through a TLS proxy whose CA it lacks. Disk: ~25 GB under the cache.
# Environment:
#   MMCTR_SMOKE_CACHE   cache dir (default /var/tmp/mmctr-smoke): base rootfs, wheelhouse, storage, out
#   MMCTR_SMOKE_WHEELS  1 (default): build from the local wheelhouse; 0: let pip use its index inside
#   MMCTR_SMOKE_KEEP    1: keep the built image (default: removed at the end, the base is kept)
#   MMCTR_SMOKE_REUSE   1: reuse an image kept by MMCTR_SMOKE_KEEP=1 (skip the build)
#   MMCTR_SMOKE_CMD     what the image runs (default: demo)
#   MMCTR_SMOKE_VARIANT image variant to build (cu13 default, cu12; docker/variants.tsv)
#   DEBIAN_MIRROR       default http://deb.debian.org/debian
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${MMCTR_SMOKE_CACHE:-/var/tmp/mmctr-smoke}
BASE_TAG=localhost/mmctr-base:bookworm
IMAGE=localhost/mmctr-kit:smoke
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
VARIANT=${MMCTR_SMOKE_VARIANT:-cu13}
LOCK=$(awk -v v="$VARIANT" '!/^[[:space:]]*#/ && $1 == v { print $2 }' "$ROOT/docker/variants.tsv")
[ -n "$LOCK" ] || { echo "smoke: FAIL: unknown MMCTR_SMOKE_VARIANT '$VARIANT' (docker/variants.tsv)" >&2; exit 1; }
WHEELS=$CACHE/wheelhouse
[ "$VARIANT" = cu13 ] || WHEELS=$CACHE/wheelhouse-$VARIANT
OUT=$CACHE/out
# shellcheck disable=SC2206  # MMCTR_SMOKE_CMD is a word list
RUN_CMD=(${MMCTR_SMOKE_CMD:-demo})

STORE=(--root "$CACHE/storage" --runroot "$CACHE/runroot" --storage-driver vfs)
ULIMITS=(--ulimit nofile=4096:4096 --ulimit nproc=4096:4096)
RUN_OPTS=(--shm-size=2g "${ULIMITS[@]}")  # the data loader's workers need more than 64 MB of shm
REPORT=()

log() { echo "smoke: $*" >&2; }
fail() { echo "smoke: FAIL: $*" >&2; exit 1; }
step() {  # step NAME COMMAND...: run, time, record
    local name=$1 t0=$SECONDS
    shift
    log "== $name"
    "$@"
    REPORT+=("$(printf '%-28s %5d s' "$name" $((SECONDS - t0)))")
}

for tool in podman buildah; do
    command -v "$tool" >/dev/null || fail "$tool is not installed (apt-get install podman buildah)"
done
[ "$(id -u)" = 0 ] || fail "run as root (debootstrap and the vfs/chroot build need it)"
mkdir -p "$CACHE"
# runc: crun refuses this kind of host's hybrid cgroups; cgroupfs/file: no systemd, no journald
PODMAN=(podman "${STORE[@]}" --runtime "${MMCTR_SMOKE_RUNTIME:-runc}" --cgroup-manager cgroupfs
        --events-backend file)
BUILDAH=(buildah "${STORE[@]}")

make_base() {
    if "${PODMAN[@]}" image exists "$BASE_TAG"; then
        log "base image $BASE_TAG already there"
        return
    fi
    local tar=$CACHE/rootfs-bookworm.tar
    if [ ! -s "$tar" ]; then
        command -v debootstrap >/dev/null || fail "debootstrap is not installed (apt-get install debootstrap)"
        rm -rf "$CACHE/rootfs.tmp"
        # python3-distutils: python3.11-venv needs it and debootstrap does not resolve virtual deps
        debootstrap --variant=minbase \
            --include=python3.11,python3.11-venv,python3-distutils,make,ca-certificates \
            bookworm "$CACHE/rootfs.tmp" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
            || fail "debootstrap failed, see $CACHE/debootstrap.log"
        rm -rf "$CACHE/rootfs.tmp/var/cache/apt/archives/"*.deb "$CACHE/rootfs.tmp/var/lib/apt/lists/"*
        tar -C "$CACHE/rootfs.tmp" -cf "$tar.part" . && mv "$tar.part" "$tar"
        rm -rf "$CACHE/rootfs.tmp"
    fi
    "${PODMAN[@]}" import --change 'CMD ["/bin/bash"]' "$tar" "$BASE_TAG" >/dev/null
}

make_wheelhouse() {
    local stamp=$WHEELS/.complete
    if [ -f "$stamp" ] && [ "$stamp" -nt "$ROOT/$LOCK" ]; then
        log "wheelhouse up to date ($(find "$WHEELS" -name '*.whl' | wc -l) wheels)"
        return
    fi
    local py=python3 extra=()
    if ! python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
        extra=(--python-version 3.11 --only-binary=:all:)
    fi
    mkdir -p "$WHEELS"
    "$py" -m pip download -q -d "$WHEELS" "${extra[@]}" -r "$ROOT/$LOCK" \
        "setuptools>=68" "pip==23.2.1"
    touch "$stamp"
}

build_image() {
    local pip_args=()
    if [ "${MMCTR_SMOKE_WHEELS:-1}" = 1 ]; then
        pip_args=(--volume "$WHEELS:/wheelhouse:ro" --build-arg PIP_NO_INDEX=1
                  --build-arg PIP_FIND_LINKS=/wheelhouse)
    fi
    "${BUILDAH[@]}" bud --isolation chroot --layers=false "${ULIMITS[@]}" \
        -f "$ROOT/docker/Dockerfile" --build-arg "VARIANT=$VARIANT" \
        --build-arg "BASE_IMAGE_CU13=$BASE_TAG" --build-arg "BASE_IMAGE_CU12=$BASE_TAG" "${pip_args[@]}" \
        --build-arg "GIT_COMMIT=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)" \
        -t "$IMAGE" "$ROOT"
}

run_image() {  # run_image EXPECTED_STATUS LOGFILE [podman run options...] -- [image args...]
    local expect=$1 logf=$2 status=0
    shift 2
    local opts=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
    shift
    "${PODMAN[@]}" run --rm "${RUN_OPTS[@]}" "${opts[@]}" "$IMAGE" "$@" >"$logf" 2>&1 || status=$?
    if [ "$status" != "$expect" ]; then
        tail -n 40 "$logf" >&2
        fail "podman run ${*:-(no args)}: exit $status, expected $expect (log: $logf)"
    fi
}

run_demo() {
    rm -rf "$OUT"
    mkdir -p "$OUT"
    chown 1000:1000 "$OUT"  # the image runs as uid 1000
    run_image 0 "$CACHE/demo.log" -e MMCTR_ALLOW_CPU=1 -v "$OUT:/out" -- "${RUN_CMD[@]}"
    grep -v 'it/s' "$CACHE/demo.log" | tail -n 5 >&2
}

# The entrypoint's answers, in one container (each start copies the whole image on vfs storage):
# usage; no data at /data (nothing mounted there); the demo's data but no GPU (validate passes first).
# shellcheck disable=SC2016  # expanded inside the container
CHECKS='ep=/opt/mmctr/docker/entrypoint.sh
$ep >/tmp/usage.log; echo "usage-status=$?"
grep -q "make task1 task2 submit" /tmp/usage.log && echo "usage-text=ok"
$ep make task1 task2 submit; echo "nodata-status=$?"
MMCTR_DATA=/out/data $ep track2; echo "nogpu-status=$?"'

check_entrypoint() {
    local logf=$CACHE/checks.log
    run_image 0 "$logf" -v "$OUT:/out" --entrypoint bash -- -c "$CHECKS"
    local want
    for want in "usage-status=0" "usage-text=ok" "nodata-status=2" \
                "mmctr: error: /data is empty: mount the organisers' data with -v /path/to/data:/data" \
                "ok: /out/data follows the data contract" "nogpu-status=4" \
                "mmctr: error: no CUDA GPU visible: run with --gpus all"; do
        grep -qF -- "$want" "$logf" || { cat "$logf" >&2; fail "entrypoint check: no '$want' (log: $logf)"; }
    done
    grep -E '^(usage|nodata|nogpu)-|error:' "$logf" >&2
}

check_zip() {
    local zip=$OUT/task1_2/submission.zip
    [ -s "$zip" ] || fail "no $zip"
    if command -v unzip >/dev/null; then unzip -l "$zip" >&2; fi
    local py=python3
    [ -x "$ROOT/.venv/bin/python" ] && py=$ROOT/.venv/bin/python
    "$py" - "$zip" "$OUT/data/MicroLens_1M_x1/test.parquet" <<'PY'
import csv, io, sys, zipfile
zpath, test = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(zpath) as z:
    names = z.namelist()
    assert "prediction.csv" in names, f"prediction.csv not at the zip root: {names}"
    rows = list(csv.reader(io.TextIOWrapper(z.open("prediction.csv"), encoding="utf-8")))
header, body = rows[0], rows[1:]
assert header == ["ID", "Task1&2"], f"columns {header}, expected ID,Task1&2"
ids = [int(r[0]) for r in body]
assert ids == list(range(len(body))), "ID is not 0..N-1 in order"
scores = [float(r[1]) for r in body]
assert all(0.0 <= s <= 1.0 for s in scores), "scores outside [0, 1]"
try:
    import pyarrow.parquet as pq
    n_test = pq.ParquetFile(test).metadata.num_rows
    assert len(body) == n_test, f"{len(body)} rows, test.parquet has {n_test}"
except ImportError:
    n_test = "? (no pyarrow)"
print(f"smoke: zip ok: prediction.csv, columns {header}, {len(body)} rows (test rows: {n_test})")
PY
}

T0=$SECONDS
step "base image (debootstrap)" make_base
if [ "${MMCTR_SMOKE_WHEELS:-1}" = 1 ]; then step "wheelhouse (pip download)" make_wheelhouse; fi
if [ "${MMCTR_SMOKE_REUSE:-0}" = 1 ] && "${PODMAN[@]}" image exists "$IMAGE"; then
    log "reusing $IMAGE"
else
    step "build image" build_image
fi
SIZE=$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE")
step "run: ${RUN_CMD[*]} (CPU)" run_demo
if [ "${RUN_CMD[*]}" = demo ]; then
    step "check submission.zip" check_zip
    step "run: entrypoint checks" check_entrypoint
fi
if [ "${MMCTR_SMOKE_KEEP:-0}" != 1 ]; then
    "${PODMAN[@]}" rmi -f "$IMAGE" >/dev/null || true
fi

echo "smoke: PASS ($VARIANT) in $((SECONDS - T0)) s; image $(awk -v s="$SIZE" 'BEGIN{printf "%.2f GB", s / 1e9}')" >&2
printf '  %s\n' "${REPORT[@]}" >&2
