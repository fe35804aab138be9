#!/usr/bin/env bash
# mmctr-kit container entrypoint: checks the NVIDIA driver, the mounts, the data contract and the GPU, then runs
# the kit's Makefile with DATA=/data RUNS=/out/<track>. `help` (the default) prints the usage.
# Paths are configurable for tests: MMCTR_DATA, MMCTR_OUT, MMCTR_KIT, MMCTR_VENV, MMCTR_PY.
set -euo pipefail

DATA=${MMCTR_DATA:-/data}
OUT=${MMCTR_OUT:-/out}
KIT=${MMCTR_KIT:-/opt/mmctr}
VENV=${MMCTR_VENV:-/opt/venv}
PY=${MMCTR_PY:-$VENV/bin/python}
WEIGHTS=${MMCTR_WEIGHTS:-/opt/mmctr/weights}
MAKE_BIN=${MMCTR_MAKE:-make}
VARIANT=${MMCTR_IMAGE_VARIANT:-}  # set by the image (cu13|cu12); empty outside an image: no driver check
VARIANTS=${MMCTR_VARIANTS:-$KIT/docker/variants.tsv}
NVIDIA_PROC=${MMCTR_NVIDIA_PROC:-/proc/driver/nvidia/version}

usage() {
    cat <<EOF
mmctr-kit: WWW 2025 Multimodal CTR Prediction Challenge (MicroLens-1M) submission kit

usage: docker run --gpus all --shm-size=16g -v DATA:$DATA -v OUT:$OUT IMAGE COMMAND [VAR=value ...]

mounts
  -v DATA:$DATA   the organisers' data: the folder holding MicroLens_1M_x1/ (read-only is fine)
  -v OUT:$OUT     writable; each track writes $OUT/<track>/ (the image runs as uid $(id -u mmctr 2>/dev/null || echo 1000):
                  chown that uid, or add --user \$(id -u):\$(id -g))

commands
  track1                      Task 1 only: new item embeddings + the fixed DIN   -> $OUT/task1/submission.zip
  track2                      Task 2 only: provided embeddings + our CTR model   -> $OUT/task2/submission.zip
  track12                     Task 1 & 2: new embeddings + our CTR model         -> $OUT/task1_2/submission.zip
  make TARGET ...             any Makefile targets, e.g. \`make task1 task2 submit\` (TRACK=task1_2 unless
                              TRACK=... is given) -> $OUT/\$TRACK/
  validate                    check $DATA against the data contract and stop
  sample                      write MicroLens-shaped sample data to $OUT/data (no GPU needed)
  demo                        sample data + Task 1 & 2 on CPU or GPU -> $OUT/task1_2/submission.zip
  bash                        a shell in the image
  help                        this text

before running, the entrypoint checks that the NVIDIA driver and the GPUs suit this image's
variant (${VARIANT:-none}), that $DATA is mounted and follows the data contract
(\`python -m mmctr validate\`), that a CUDA GPU is visible, that $OUT is writable and that
/dev/shm is large enough (--shm-size=16g or --ipc=host).

environment
  MMCTR_ALLOW_CPU=1      run without a GPU (fine for sample-sized data, far too slow for the real data)
  MMCTR_SKIP_VALIDATE=1  skip the data contract check; MMCTR_VALIDATE_ARGS=--no-images skips the images
  MMCTR_DRY_RUN=1        print the make commands instead of running them
  MMCTR_MIN_SHM_MB=N     smallest /dev/shm accepted (default 1024; 0: no check)
  MMCTR_SKIP_DRIVER_CHECK=1  run even when the driver or GPU is older/newer than the variant supports

examples
  docker run --gpus all --shm-size=16g -v \$PWD/data:$DATA:ro -v \$PWD/out:$OUT IMAGE make task1 task2 submit
  docker run --gpus all --shm-size=16g -v \$PWD/data:$DATA:ro -v \$PWD/out:$OUT IMAGE track2
  docker run --shm-size=2g -v \$PWD/out:$OUT IMAGE demo
EOF
}

die() {  # die MESSAGE [STATUS]
    echo "mmctr: error: $1" >&2
    exit "${2:-1}"
}

note() {
    echo "mmctr: $*" >&2
}

check_data() {
    if [ ! -d "$DATA" ]; then
        die "no data directory at $DATA: mount the organisers' data with -v /path/to/data:$DATA (the folder holding MicroLens_1M_x1/)" 2
    fi
    if [ -z "$(ls -A "$DATA" 2>/dev/null)" ]; then
        die "$DATA is empty: mount the organisers' data with -v /path/to/data:$DATA (the folder holding MicroLens_1M_x1/); \`demo\` runs on sample data instead" 2
    fi
    if [ "${MMCTR_SKIP_VALIDATE:-0}" = 1 ]; then
        note "MMCTR_SKIP_VALIDATE=1: not checking $DATA against the data contract"
        return
    fi
    note "checking $DATA against the data contract"
    # shellcheck disable=SC2086  # MMCTR_VALIDATE_ARGS is a list of flags
    if ! (cd "$KIT" && "$PY" -m mmctr validate --data-dir "$DATA" ${MMCTR_VALIDATE_ARGS:-}); then
        die "$DATA does not follow the data contract (problems listed above); fix the data or mount the right folder (-v DATA:$DATA)" 3
    fi
}

check_gpu() {
    local status=0
    "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)' || status=$?
    if [ "$status" = 0 ]; then
        "$PY" -c 'import torch; print("mmctr: GPU:", torch.cuda.get_device_name(0))' >&2 || true
        return
    fi
    if [ "$status" != 3 ]; then
        die "cannot import torch with $PY (status $status): the image's venv is broken" 4
    fi
    if [ "${MMCTR_ALLOW_CPU:-0}" = 1 ]; then
        note "no CUDA GPU visible; MMCTR_ALLOW_CPU=1: running on CPU"
        return
    fi
    die "no CUDA GPU visible: run with --gpus all (docker + NVIDIA Container Toolkit) or --device nvidia.com/gpu=all (podman, CDI); set MMCTR_ALLOW_CPU=1 to run on CPU (sample-sized data only)" 4
}

variant_field() {  # variant_field VARIANT COLUMN: a field of docker/variants.tsv
    awk -v v="$1" -v c="$2" '!/^[[:space:]]*#/ && NF == 7 && $1 == v {
        split("variant lock base_image torch cuda min_driver gpus", cols, " ")
        for (i = 1; i <= 7; i++) if (cols[i] == c) print $i }' "$VARIANTS"
}

version_lt() {  # version_lt A B: true when dotted version A < B (numeric fields: 535.104.05 < 580.65.06)
    local -a a b
    local i n
    IFS=. read -r -a a <<<"$1"
    IFS=. read -r -a b <<<"$2"
    n=$(( ${#a[@]} > ${#b[@]} ? ${#a[@]} : ${#b[@]} ))
    for ((i = 0; i < n; i++)); do
        if ((10#${a[i]:-0} != 10#${b[i]:-0})); then
            ((10#${a[i]:-0} < 10#${b[i]:-0}))
            return
        fi
    done
    return 1
}

is_version() { [[ $1 =~ ^[0-9]{1,6}(\.[0-9]{1,6}){0,3}$ ]]; }

driver_version() {  # the host's NVIDIA driver (e.g. 550.54.14); empty when none is visible
    local v=""
    if command -v nvidia-smi >/dev/null 2>&1; then
        v=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' \r') || v=""
    fi
    if ! is_version "$v" && [ -r "$NVIDIA_PROC" ]; then
        # "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 ..."
        v=$(awk 'NR == 1 { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\.[0-9]+(\.[0-9]+)?$/) { print $i; exit } }' "$NVIDIA_PROC")
    fi
    if is_version "$v"; then echo "$v"; fi
}

other_variant() {  # other_variant DRIVER: the variant with the newest CUDA this driver runs, if any
    awk -v cur="$VARIANT" '!/^[[:space:]]*#/ && NF == 7 && $1 != cur { print $1, $5, $6 }' "$VARIANTS" |
        while read -r name cuda min; do
            if ! version_lt "$1" "$min"; then echo "$cuda $name"; fi
        done | sort -t. -k1,1nr -k2,2nr | awk 'NR == 1 { print $2 }'
}

check_driver() {  # before any work: the host's driver must be new enough for the image's CUDA
    [ -n "$VARIANT" ] || return 0
    if [ "${MMCTR_SKIP_DRIVER_CHECK:-0}" = 1 ]; then
        note "MMCTR_SKIP_DRIVER_CHECK=1: not checking the NVIDIA driver"
        return 0
    fi
    local min cuda torch gpus driver alt
    min=$(variant_field "$VARIANT" min_driver)
    if [ -z "$min" ]; then
        note "warning: image variant '$VARIANT' is not in $VARIANTS: not checking the NVIDIA driver"
        return 0
    fi
    cuda=$(variant_field "$VARIANT" cuda)
    torch=$(variant_field "$VARIANT" torch)
    gpus=$(variant_field "$VARIANT" gpus)
    driver=$(driver_version)
    if [ -z "$driver" ]; then
        return 0  # no NVIDIA driver visible: check_gpu says so (or MMCTR_ALLOW_CPU=1 runs on CPU)
    fi
    if version_lt "$driver" "$min"; then
        alt=$(other_variant "$driver")
        local fix="update the NVIDIA driver to >= $min"
        if [ -n "$alt" ]; then
            fix="use the $alt image instead (make docker-build VARIANT=$alt, needs driver >= $(variant_field "$alt" min_driver)) or update the NVIDIA driver to >= $min"
        fi
        die "NVIDIA driver $driver is too old for this image: variant $VARIANT (torch $torch, CUDA $cuda) needs driver >= $min: $fix" 7
    fi
    check_gpu_arch "$gpus"
    note "NVIDIA driver $driver (variant $VARIANT: torch $torch, CUDA $cuda, needs >= $min)"
}

check_gpu_arch() {  # check_gpu_arch LOW-HIGH: every visible GPU's compute capability in the torch build's range
    local low=${1%-*} high=${1#*-} caps cc idx=0 alt name
    caps=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | tr -d ' \r') || return 0
    for cc in $caps; do
        # a build for sm_XY also runs on sm_XZ, Z > Y (same major): the upper bound is a major version
        if is_version "$cc" && { version_lt "$cc" "$low" || version_lt "${high%%.*}.99" "$cc"; }; then
            alt=""
            while read -r name; do
                local range
                range=$(variant_field "$name" gpus)
                if ! version_lt "$cc" "${range%-*}" && ! version_lt "${range##*-}" "${cc%%.*}.0"; then alt=$name; fi
            done < <(awk -v cur="$VARIANT" '!/^[[:space:]]*#/ && NF == 7 && $1 != cur { print $1 }' "$VARIANTS")
            local fix="pick another GPU with --gpus"
            if [ -n "$alt" ]; then
                fix="use the $alt image instead (make docker-build VARIANT=$alt, needs driver >= $(variant_field "$alt" min_driver)), or $fix"
            fi
            die "GPU $idx has compute capability $cc, which this image's torch (variant $VARIANT) has no kernels for (it covers $low to $high): $fix" 7
        fi
        idx=$((idx + 1))
    done
}

check_out() {
    mkdir -p "$OUT" 2>/dev/null || true
    local probe="$OUT/.mmctr-write-test.$$"
    if ! { : >"$probe"; } 2>/dev/null; then
        die "cannot write to $OUT as uid $(id -u): mount a writable folder with -v OUT:$OUT and make it writable for that uid (chown $(id -u) OUT, or run with --user \$(id -u):\$(id -g))" 5
    fi
    rm -f "$probe"
    mkdir -p "$OUT/cache"  # the kit's cache/ (task1's encoder outputs) points here in the image
}

check_shm() {  # torch's DataLoader workers pass batches through /dev/shm; docker gives 64 MB
    local min_mb=${MMCTR_MIN_SHM_MB:-1024} shm=${MMCTR_SHM:-/dev/shm} kb
    [ "$min_mb" -gt 0 ] || return 0
    kb=$(df -Pk "$shm" 2>/dev/null | awk 'NR == 2 {print $2}')
    if [ -n "$kb" ] && [ "$kb" -lt $((min_mb * 1024)) ]; then
        die "$shm is only $((kb / 1024)) MB (PyTorch's data loader workers need more): run with --shm-size=16g (or --ipc=host); MMCTR_MIN_SHM_MB=0 skips this check" 6
    fi
}

ensure_home() {  # an arbitrary --user uid has no writable HOME; caches (torch, matplotlib) need one
    if [ -z "${HOME:-}" ] || [ ! -w "${HOME}" ]; then
        export HOME=/tmp/mmctr-home
        mkdir -p "$HOME"
    fi
}

run_make() {  # run_make RUNS ARGS... (in the kit directory, with the image's venv)
    local runs=$1
    shift
    local argv=("$MAKE_BIN" -C "$KIT" -o "$VENV/.installed" "$@" "DATA=$DATA" "RUNS=$runs"
               "PY=$PY" "VENV=$VENV")
    # encoders fetched at build time other than task1's defaults come with their own task1 config
    if [ -f "$WEIGHTS/task1.yaml" ] && [[ " ${USER_VARS[*]} " != *" T1_CONFIG="* ]]; then
        argv+=("T1_CONFIG=$WEIGHTS/task1.yaml")
    fi
    # user VAR=value arguments come after ours, so they win
    argv+=("${USER_VARS[@]}")
    if [ "${MMCTR_DRY_RUN:-0}" = 1 ]; then
        echo "+ ${argv[*]}"
        return
    fi
    note "running: ${argv[*]}"
    local t0=$SECONDS
    "${argv[@]}"
    note "done in $((SECONDS - t0)) s: $runs"
}

track_dir() {  # the runs folder of a track target
    case $1 in
        track1) echo task1 ;;
        track2) echo task2 ;;
        track12) echo task1_2 ;;
    esac
}

cmd=${1:-help}
case $cmd in
    help|-h|--help|usage)
        usage
        exit 0
        ;;
    bash|sh|shell)
        shift
        exec bash "$@"
        ;;
esac

ensure_home
USER_VARS=()
TARGETS=()
TRACK_VAR=${TRACK:-task1_2}

case $cmd in
    validate)
        check_data
        note "ok: $DATA follows the data contract"
        exit 0
        ;;
    sample|demo)
        shift
        for a in "$@"; do USER_VARS+=("$a"); done
        if [ "$cmd" = demo ]; then check_driver; fi
        check_out
        check_shm
        DATA="$OUT/data"
        if [ "$cmd" = sample ]; then
            run_make "$OUT/task1_2" sample
            exit 0
        fi
        # the demo is sample-sized: a GPU is used when there is one, CPU is fine otherwise
        MMCTR_ALLOW_CPU=1
        check_gpu
        run_make "$OUT/task1_2" demo
        exit 0
        ;;
    make)
        shift
        ;;
esac

for a in "$@"; do
    case $a in
        TRACK=*) TRACK_VAR=${a#TRACK=}; TRACK_ARG=$a; USER_VARS+=("$a") ;;
        DATA=*|RUNS=*) die "$a: the data is always $DATA and the output $OUT/<track> inside the image: change the mounts instead" 2 ;;
        *=*) USER_VARS+=("$a") ;;
        -*) die "make options are not passed through: $a" 2 ;;
        *) TARGETS+=("$a") ;;
    esac
done
[ ${#TARGETS[@]} -gt 0 ] || die "no make target given; see \`help\`" 2

tracks=()
others=()
for t in "${TARGETS[@]}"; do
    if [ -n "$(track_dir "$t")" ]; then tracks+=("$t"); else others+=("$t"); fi
done
if [ ${#tracks[@]} -gt 0 ] && [ ${#others[@]} -gt 0 ]; then
    die "give either track targets (${tracks[*]}) or step targets (${others[*]}), not both" 2
fi
if [ ${#tracks[@]} -gt 0 ] && [ -n "${TRACK_ARG:-}" ]; then
    die "$TRACK_ARG: a track target sets its own TRACK; drop it" 2
fi

check_driver
check_data
check_gpu
check_out
check_shm

if [ ${#tracks[@]} -gt 0 ]; then
    for t in "${tracks[@]}"; do
        run_make "$OUT/$(track_dir "$t")" "$t"
    done
else
    run_make "$OUT/$TRACK_VAR" "${others[@]}"
fi
