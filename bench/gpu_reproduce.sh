#!/usr/bin/env bash
# The one command for a lent GPU machine (bare image, no registry, 10 minutes a command): install fastai from the carried
# wheels, find CIFAR-10 in the carried folder, a preflight (the smoke preset on the device, then the measured throughput and
# `--budget`), then the seed recipe sized by `--budget` to the time left (or PRESET as it is). results.json and report.md are
# written after every phase and copied to $OUT as the run goes, so a run cut at the limit still returns what finished.
#
#   bash bench/gpu_bundle.sh                              # first, on a development machine: the wheels and CIFAR-10 into bundle/
#   bash bench/gpu_reproduce.sh                           # on the device, with carry ["bundle"] (README: Run on a GPU)
#   DEVICE=cpu PRESET=smoke OUT=/tmp/o bash bench/gpu_reproduce.sh   # the same script on a CPU (bench/gpu_dryrun.sh: from the bundle only)
#
# Environment: DEVICE (cuda), PRESET (default: the seed recipe sized by --budget to the time left), OUT (a folder for at most 8 summary
# files: results.json, report.md, accuracy.png, pretrain_loss.png, bench.json, plan.txt, timing.txt, log.txt; default none),
# RUN_ROOT (runs/gpu: the run folders, checkpoints included), LIMIT_S (570: the seconds this command may take in all),
# MARGIN_S (45), PREFLIGHT (1), BENCH_BS (256), BENCH_STEPS (50), BENCH_WARMUP (10), SKIP_INSTALL=1, COMPILE=1 (torch.compile),
# FASTAI_SIMCLR_DATA (a CIFAR-10 folder; default bundle/data/cifar10-jpg.tar.gz or ../shared/data/cifar10-jpg.tar.gz,
# extracted once), SWEEP=1 (then the label-efficiency sweep, outside the time plan).
# pip prints that fastai requires spacy: it is left out on purpose (fastai.text only); the install still succeeds.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # the library runs from this checkout
PY="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"
LIMIT_S="${LIMIT_S:-570}"; MARGIN_S="${MARGIN_S:-45}"
RUN_ROOT="${RUN_ROOT:-runs/gpu}"
OUT_DIR="${OUT:-}"
t0=$(date +%s)
mkdir -p "$RUN_ROOT"
LOG="$RUN_ROOT/log.txt"; : > "$LOG"
exec > >(tee -a "$LOG") 2> >(tee -a "$LOG" >&2)
elapsed() { echo $(( $(date +%s) - t0 )); }

# the summary files, copied to $OUT now and then while the run goes, and at the end
RUN=""
collect() {
  [ -n "$OUT_DIR" ] || return 0
  mkdir -p "$OUT_DIR"
  local f
  for f in "$RUN/results.json" "$RUN/report.md" "$RUN/accuracy.png" "$RUN/pretrain_loss.png" \
           "$RUN_ROOT/bench.json" "$RUN_ROOT/plan.txt" "$RUN_ROOT/timing.txt" "$LOG"; do
    [ -f "$f" ] && cp -f "$f" "$OUT_DIR/" 2>/dev/null || true
  done
}
COPIER=""
finish() { [ -n "$COPIER" ] && kill "$COPIER" 2>/dev/null; collect; }
trap finish EXIT

# install: fastai and its pure-Python dependencies from the carried wheels (bench/gpu_bundle.sh), no registry
if [ "${SKIP_INSTALL:-0}" != 1 ] && ! "$PY" -c "import fastai.vision.all" 2>/dev/null; then
  if [ -d bundle/wheels ]; then
    PIP=("$PY" -m pip); "$PY" -m pip --version >/dev/null 2>&1 || PIP=("$PY" "$(ls bundle/wheels/pip-*.whl | head -1)/pip")
    export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
    pipi() { "${PIP[@]}" install -q --no-index --find-links bundle/wheels "$@" || "${PIP[@]}" install -q --user --no-index --find-links bundle/wheels "$@"; }
    pipi --no-deps -r bundle/fastai.txt && pipi -r bundle/requirements.txt
  else
    "$PY" -m pip install --quiet -e . 2>/dev/null || "$PY" -m pip install --quiet --no-build-isolation --no-deps -e . 2>/dev/null \
      || echo "gpu_reproduce: pip install -e . failed; running from the checkout"
  fi
  "$PY" -c "import fastai.vision.all" || { echo "gpu_reproduce: fastai does not import after the install (bundle/wheels: bash bench/gpu_bundle.sh)" >&2; exit 4; }
fi
echo "gpu_reproduce: installed ($(elapsed)s)"

# CIFAR-10: $FASTAI_SIMCLR_DATA, else the carried archive, else ../shared (tools/data.sh)
if [ -z "${FASTAI_SIMCLR_DATA:-}" ] && [ -f bundle/data/cifar10-jpg.tar.gz ]; then
  dest="${DATA_CACHE:-${TMPDIR:-/tmp}/fastai_simclr_data}"
  if [ ! -d "$dest/cifar10/train" ] || [ ! -d "$dest/cifar10/test" ]; then
    rm -rf "$dest.partial" && mkdir -p "$dest.partial" && tar xzf bundle/data/cifar10-jpg.tar.gz -C "$dest.partial" && rm -rf "$dest" && mv "$dest.partial" "$dest"
  fi
  export FASTAI_SIMCLR_DATA="$dest/cifar10"
fi
source tools/data.sh
"$PY" -c "import torch, sys; d=sys.argv[1]; ok = not d.startswith('cuda') or torch.cuda.is_available(); \
print('torch', torch.__version__, '|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'); sys.exit(0 if ok else 3)" "$DEVICE" \
  || { echo "gpu_reproduce: DEVICE=$DEVICE but CUDA is not available" >&2; exit 3; }
"$PY" -m fastai_simclr.cli prepare
echo "gpu_reproduce: data ready ($(elapsed)s)"

SPEED=(); [ "${COMPILE:-0}" = 1 ] && SPEED+=(--compile)
# preflight: every phase of the smoke preset on the device (a fresh folder each time), then the measured throughput
if [ "${PREFLIGHT:-1}" = 1 ]; then
  tp=$(date +%s); rm -rf "$RUN_ROOT/preflight"
  "$PY" -m fastai_simclr.cli reproduce --preset smoke --device "$DEVICE" --out "$RUN_ROOT/preflight" --yes "${SPEED[@]}" >/dev/null
  echo "gpu_reproduce: preflight (smoke preset, every phase) passed in $(( $(date +%s) - tp ))s"
fi
"$PY" -m fastai_simclr.cli bench --device "$DEVICE" --bs "${BENCH_BS:-256}" --steps "${BENCH_STEPS:-50}" --warmup "${BENCH_WARMUP:-10}" \
  --only ours,plain --no-defaults --json "$RUN_ROOT/bench.json" "${SPEED[@]}"
t_pre=$(date +%s)

# the run: with PRESET, that fixed preset; else the seed recipe sized by --budget to what is left of LIMIT_S (the plan goes to plan.txt)
left=$(( LIMIT_S - (t_pre - t0) - MARGIN_S ))
if [ -n "${PRESET:-}" ]; then SIZE=(--preset "$PRESET"); NAME="$PRESET"
else SIZE=(--preset seed --budget "$(( left > 60 ? left : 60 ))s"); NAME="seed-budget"; fi
RUN="$RUN_ROOT/$NAME-${DEVICE%%:*}"
echo "gpu_reproduce: ${SIZE[*]} -> $RUN ($left s left)"
[ -n "$OUT_DIR" ] && { ( while sleep 10; do collect; done ) & COPIER=$!; }
rc=0
# stop before the machine's limit, so that the files of every finished phase are copied
timeout --signal=TERM --kill-after=10 $(( LIMIT_S - $(elapsed) > 30 ? LIMIT_S - $(elapsed) : 30 )) \
  "$PY" -m fastai_simclr.cli reproduce "${SIZE[@]}" --device "$DEVICE" --out "$RUN" --yes "${SPEED[@]}" || rc=$?
{ echo "time plan: ${SIZE[*]} ($left s left of LIMIT_S after the preflight and the benchmark)"; grep -a '^\[plan\]' "$LOG" || true; } > "$RUN_ROOT/plan.txt"
t_end=$(date +%s)
status=finished; [ $rc = 124 ] || [ $rc = 137 ] && status="cut at the time limit (partial results)"; [ $rc != 0 ] && [ "$status" = finished ] && status="failed ($rc)"
printf 'device %s, %s: %s\npreflight and benchmark %ss, reproduce %ss, total %ss\n' "$DEVICE" "${SIZE[*]}" "$status" \
  $((t_pre-t0)) $((t_end-t_pre)) $((t_end-t0)) | tee "$RUN_ROOT/timing.txt"
cp -f "$RUN_ROOT/bench.json" "$RUN/bench.json" 2>/dev/null || true

if [ "${SWEEP:-0}" = 1 ] && [ $rc = 0 ]; then
  "$PY" -m fastai_simclr.cli sweep --preset "${PRESET:-seed}" --device "$DEVICE" --encoder "$RUN" --out "$RUN-sweep" \
    --fracs "${SWEEP_FRACS:-0.01,0.05,0.1,0.3,1}" --max-fold-labels "${SWEEP_FOLD_LABELS:-60000}" --yes "${SPEED[@]}"
fi
exit $rc
