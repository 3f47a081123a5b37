#!/usr/bin/env bash
# On a development machine (with PyPI): gather what the lent GPU machine lacks into folders git ignores, so that they travel
# with the working tree as the device tool's `carry` list, then print that list and the device command.
# The device image has python 3.12, torch, torchvision, timm, scikit-learn, accelerate, matplotlib, pillow, pandas, scipy,
# safetensors, but no fastai and none of fastai's own pure-Python dependencies, and it reaches no registry.
#
#   bash bench/gpu_bundle.sh                       # wheels for python 3.12 into bundle/wheels, the CIFAR-10 archive into bundle/data
#   PY_VERSIONS="3.12 3.11" bash bench/gpu_bundle.sh   # also the compiled wheels of 3.11 (for the CPU dry run, bench/gpu_dryrun.sh)
#
# Environment: PY_VERSIONS (3.12), CIFAR_ARCHIVE (../shared/data/cifar10-jpg.tar.gz beside the clone), MAX_MIB (48: the carry limit
# is 64 MiB in all, the working tree included).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
W=bundle/wheels; D=bundle/data
MAX_MIB="${MAX_MIB:-48}"
# fastai itself without its dependencies (spacy is for fastai.text only, and would bring compiled wheels); then fastai's
# dependencies that the image lacks, with their own closure. The versions are those this project is tested with.
FASTAI=("fastai==2.8.12")
DEPS=("fastcore==2.2.41" "fasttransform==0.0.5" "fastprogress==1.1.6" "fastdownload==0.0.8" "plum-dispatch==2.9.0" cloudpickle requests pyyaml packaging)
mkdir -p "$W" "$D"
for v in ${PY_VERSIONS:-3.12}; do
  tag=(--only-binary=:all: --python-version "$v" --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64)
  "$PY" -m pip download --quiet --no-deps -d "$W" "${tag[@]}" "${FASTAI[@]}" pip
  "$PY" -m pip download --quiet -d "$W" "${tag[@]}" "${DEPS[@]}"
done
# nothing heavy may slip in: the image's own packages stay the image's
if ls "$W" | grep -Eqi '^(torch|torchvision|nvidia|triton|numpy|scipy|pandas)-'; then
  echo "gpu_bundle: a wheel of a package the image already has was downloaded:" >&2; ls "$W" | grep -Ei '^(torch|torchvision|nvidia|triton|numpy|scipy|pandas)-' >&2; exit 1
fi
printf '%s\n' "${FASTAI[@]}" > bundle/fastai.txt          # installed with --no-deps
printf '%s\n' "${DEPS[@]}" > bundle/requirements.txt      # installed with their dependencies, from the wheels only

ARCH="${CIFAR_ARCHIVE:-../shared/data/cifar10-jpg.tar.gz}"
if [ ! -f "$D/cifar10-jpg.tar.gz" ]; then
  [ -f "$ARCH" ] || { echo "gpu_bundle: no CIFAR-10 archive at $ARCH (set CIFAR_ARCHIVE)" >&2; exit 1; }
  cp "$ARCH" "$D/cifar10-jpg.tar.gz"
fi

kib() { du -sk "$@" | awk '{s+=$1} END {print s}'; }
tree_kib=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -sk 2>/dev/null | awk '{s+=$1} END {print s}')
total=$(( $(kib "$W" "$D" bundle/*.txt) + tree_kib ))
printf 'gpu_bundle: %s wheels (%s KiB), CIFAR-10 %s KiB, working tree %s KiB: %s MiB in all (limit %s MiB here, 64 for the device)\n' \
  "$(ls "$W" | wc -l)" "$(kib "$W")" "$(kib "$D")" "$tree_kib" $((total / 1024)) "$MAX_MIB"
if [ $((total / 1024)) -ge "$MAX_MIB" ]; then echo "gpu_bundle: too large to carry" >&2; exit 1; fi
{ git check-ignore -q "$W" && git check-ignore -q "$D"; } || { echo "gpu_bundle: $W and $D must be ignored by git (.gitignore)" >&2; exit 1; }
echo
echo 'carry:   ["bundle"]'
echo 'command: bash bench/gpu_reproduce.sh'
echo '         (timeout_s 600; it plans for LIMIT_S=570 seconds and copies its summary files to $OUT as it goes)'
