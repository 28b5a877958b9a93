#!/usr/bin/env bash
# The GPU checks and timings in one call, for a lent GPU machine (the steps' time limits add up to 570 s).
#
# usage (from the repository root): bash benchmarks/device/run.sh
#   after bash benchmarks/device/prepare.sh here; with the device tool:
#   run(command="bash benchmarks/device/run.sh", carry=[".device_kit"], timeout_s=600)
#
# Writes into $OUT (default ./device_out), at most 8 files: log.txt (every step's output and exit status) and
# one JSON per benchmark. Each step has its own time limit and a failed step does not stop the next. DEVICE
# (default cuda) and QUICK=1 (tiny sizes) let the script itself be checked on a CPU machine:
#   DEVICE=cpu QUICK=1 bash benchmarks/device/run.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-device_out}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
KIT=.device_kit
mkdir -p "$OUT"
LOG=$OUT/log.txt
: >"$LOG"
export NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore

note() { echo "$*" | tee -a "$LOG"; }

# packages the GPU image lacks: install the carried wheels unless they import already
if ! python3 -c "import segmentation_models_pytorch, albumentations, jsonargparse" 2>/dev/null; then
    if ! ls "$KIT"/whl/*.whl >/dev/null 2>&1; then
        note "run.sh: no wheels in $KIT/whl: run bash benchmarks/device/prepare.sh first and carry $KIT"
        exit 2
    fi
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "$KIT"/whl/*.whl >>"$LOG" 2>&1 || { note "run.sh: installing the wheels failed (see $LOG)"; exit 2; }
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

{ command -v nvidia-smi >/dev/null && nvidia-smi -L; python3 - <<'PY'
import platform, lightning, torch, segmentation_models_pytorch as smp, timm
print("python", platform.python_version(), "torch", torch.__version__, "lightning", lightning.__version__,
      "smp", smp.__version__, "timm", timm.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PY
} 2>&1 | tee -a "$LOG"
if [ "$DEVICE" = cuda ] && ! python3 -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    note "run.sh: torch sees no CUDA device here; DEVICE=cpu checks the script on a CPU machine"
    exit 2
fi

DATA=$KIT/kvasir_seg
if [ -d "$DATA/images" ]; then KVASIR=(--kvasir "$DATA"); ROOT=(--root "$DATA"); else KVASIR=(--datasets synthetic); ROOT=(--root none); fi
if [ "$QUICK" = 1 ]; then
    SIZES=(64); SECONDS_PER=0.5; BATCHES=2; BIG=128; OVERHEAD=(--size 64 --steps 2 --warmup 1 --hosts pl)
else
    SIZES=(128 224); SECONDS_PER=4; BATCHES=20; BIG=512; OVERHEAD=(--size 224 --batch-size 32 --unlabeled-batch-size 64)
fi
if [ "$DEVICE" = cuda ]; then PRECISION=bf16-mixed; BF16=(--bf16); else PRECISION=32; BF16=(); fi

step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, log output and exit status, go on either way
    local name=$1 limit=$2; shift 2
    note "== $name: $*"
    local start=$SECONDS
    timeout "$limit" "$@" >>"$LOG" 2>&1
    note "== $name: exit $? after $((SECONDS - start)) s"
}

# 1. the GPU paths of the package, on the CPU and on the GPU (tests/test_devices.py; -rs lists any skip)
step tests 180 python3 -m pytest -q -rs -p no:cacheprovider tests/test_devices.py
# 2. the corruption recipe's batched torch path: the default batch of 64, then a GPU-sized batch
step corruptions 90 python3 benchmarks/corruptions.py --device "$DEVICE" "${KVASIR[@]}" --sizes "${SIZES[@]}" \
    --batch-size 64 --min-seconds "$SECONDS_PER" --output "$OUT/corruptions_b64.json"
step corruptions_big 70 python3 benchmarks/corruptions.py --device "$DEVICE" "${KVASIR[@]}" --sizes "${SIZES[@]}" \
    --batch-size "$BIG" --n-masks "$((BIG * 2))" --min-seconds "$SECONDS_PER" --no-baseline \
    --output "$OUT/corruptions_b$BIG.json"
# 3. the predictor's training samples per second: data side on the device, then whole bf16 steps
step predictor_throughput 120 python3 benchmarks/predictor_throughput.py "${ROOT[@]}" --sizes "${SIZES[@]}" \
    --device "$DEVICE" --precision "$PRECISION" --channels-last --batch-size 64 --data-batches "$BATCHES" \
    --e2e-batches "$BATCHES" --threads 8 --no-baseline --out "$OUT/predictor_throughput.json"
# 4. what guidance costs per training step of each reference host
step overhead 110 python3 benchmarks/overhead.py --device "$DEVICE" "${BF16[@]}" --channels-last "${OVERHEAD[@]}" \
    --out "$OUT/overhead.json"
note "run.sh: done; files in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
