#!/usr/bin/env bash
# Prepare, on a machine with the package registries, what a lent GPU machine lacks for benchmarks/device/run.sh.
#
# usage: bash benchmarks/device/prepare.sh [DATA_ROOT] [N_PAIRS]
#
# Writes .device_kit/ (git-ignored) in the repository root:
#   whl/        wheels (CPython 3.12, x86-64) of the packages the GPU image does not hold, at the versions
#               installed here, so the GPU runs the code the tests ran with;
#   kvasir_seg/ the first N_PAIRS (default 200) image/mask pairs of DATA_ROOT (default ../shared/data/kvasir_seg),
#               in the standard layout, for the throughput benchmarks (the data beside the checkout does not
#               travel to the GPU machine). Skipped when DATA_ROOT has no images/ folder.
# The device tool then carries it: run(command="bash benchmarks/device/run.sh", carry=[".device_kit"]).
# Remove it afterwards (rm -rf .device_kit): it holds a copy of the data.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
KIT=.device_kit
DATA_ROOT=${1:-../shared/data/kvasir_seg}
N_PAIRS=${2:-200}
case $N_PAIRS in '' | *[!0-9]*) echo "N_PAIRS must be a whole number, got '$N_PAIRS'" >&2; exit 2 ;; esac

# the GPU image has torch, torchvision, lightning, timm, torchmetrics, OpenCV, SciPy, matplotlib, tensorboard,
# rich, PyYAML, pydantic's typing-extensions; these are missing there (see the device tool's KINDS.md)
PACKAGES=(segmentation_models_pytorch albumentations albucore pydantic pydantic_core annotated_types
          typing_inspection stringzilla simsimd jsonargparse docstring_parser typeshed_client)
pins=()
for name in "${PACKAGES[@]}"; do
    version=$(python3 -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name") || {
        echo "prepare.sh: $name is not installed here; run pip install -e \".[dev]\" first" >&2; exit 2; }
    pins+=("$name==$version")
done
rm -rf "$KIT/whl" && mkdir -p "$KIT/whl"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$KIT/whl" "${pins[@]}"

rm -rf "$KIT/kvasir_seg"
if [ -d "$DATA_ROOT/images" ]; then
    mkdir -p "$KIT/kvasir_seg/images" "$KIT/kvasir_seg/masks"
    copied=0
    for image in $(find "$DATA_ROOT/images" -maxdepth 1 -type f | sort | head -n "$N_PAIRS"); do
        name=$(basename "$image")
        mask=$(find "$DATA_ROOT/masks" -maxdepth 1 -name "${name%.*}.*" | head -n 1)
        [ -n "$mask" ] || continue
        cp "$image" "$KIT/kvasir_seg/images/" && cp "$mask" "$KIT/kvasir_seg/masks/"
        copied=$((copied + 1))
    done
    [ -f "$DATA_ROOT/README.md" ] && cp "$DATA_ROOT/README.md" "$KIT/kvasir_seg/"
    echo "prepare.sh: $copied pairs of $DATA_ROOT in $KIT/kvasir_seg"
else
    echo "prepare.sh: no $DATA_ROOT/images; the GPU run times the embedded synthetic data only"
fi
echo "prepare.sh: $(du -sh "$KIT" | cut -f1) in $KIT (with the working tree, at most 64 MiB may travel)"
