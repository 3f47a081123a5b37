#!/usr/bin/env bash
# On a machine with one GPU: install fastai_simclr, find or extract CIFAR-10, run the benchmark, then the whole experiment
# (`fastai-simclr reproduce`) with the GPU speed options (bf16 and channels-last: the CUDA defaults), into a results folder.
#
#   bash bench/gpu_reproduce.sh                          # PRESET: seed if the benchmark says it fits BUDGET_S, else gpu10min
#   PRESET=seed bash bench/gpu_reproduce.sh              # the seed recipe whatever it takes
#   DEVICE=cpu PRESET=smoke BENCH_BS=16 BENCH_STEPS=2 BENCH_WARMUP=1 bash bench/gpu_reproduce.sh   # the CPU check of this script
#   SWEEP=1 bash bench/gpu_reproduce.sh                  # then the label-efficiency sweep with the same preset and encoder
#
# Environment: DEVICE (cuda), PRESET (auto), OUT (runs/<preset>-<device>), BUDGET_S (600), BENCH_BS (256), BENCH_STEPS (50),
# BENCH_WARMUP (10), SKIP_INSTALL=1 (already installed), PEER=1 (also measure the self_supervised peer: bench/setup_peer.sh needs PyPI), COMPILE=1 (torch.compile),
# FASTAI_SIMCLR_DATA (a CIFAR-10 folder; default: ../shared/data/cifar10-jpg.tar.gz extracted once, see tools/data.sh).
# SWEEP=1: then the full-size label-efficiency sweep (`fastai-simclr sweep`: SWEEP_FRACS (0.01,0.05,0.1,0.3,1) of the labels, the same preset,
# the encoder of the reproduce run, at most SWEEP_FOLD_LABELS (60000) labels x folds per fraction) into $OUT-sweep.
# Outputs: $OUT/ (results.json, report.md, plots, per-phase results) with $OUT/bench.json and $OUT/timing.txt; with SWEEP=1 also
# $OUT-sweep/ (sweep.json, report.md, sweep.png) and $OUT-sweep/timing.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"
BUDGET_S="${BUDGET_S:-600}"
t0=$(date +%s)

# install: pip install -e . (keeps the installed torch); offline, without build isolation; the commands below run
# `python -m fastai_simclr.cli` from this checkout, so they work even if both fail
if [ "${SKIP_INSTALL:-0}" != 1 ] && ! "$PY" -m pip install --quiet -e . 2>/dev/null; then
  "$PY" -m pip install --quiet --no-build-isolation --no-deps -e . 2>/dev/null || echo "gpu_reproduce: pip install -e . failed; running from the checkout"
fi
source tools/data.sh
"$PY" -c "import torch, sys; d=sys.argv[1]; ok = not d.startswith('cuda') or torch.cuda.is_available(); \
print('torch', torch.__version__, '|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'); sys.exit(0 if ok else 3)" "$DEVICE" \
  || { echo "gpu_reproduce: DEVICE=$DEVICE but CUDA is not available" >&2; exit 3; }
"$PY" -m fastai_simclr.cli prepare

SPEED=(); [ "${COMPILE:-0}" = 1 ] && SPEED+=(--compile)
ONLY=ours,plain; CMP=(--no-defaults)   # (2), each at its defaults, needs the peer
if [ "${PEER:-0}" = 1 ]; then bash bench/setup_peer.sh >/dev/null && { ONLY=ours,plain,peer; CMP=(); } || echo "gpu_reproduce: peer setup failed; measuring ours and plain"; fi
BENCH_JSON="$(mktemp -d)/bench.json"
"$PY" -m fastai_simclr.cli bench --device "$DEVICE" --bs "${BENCH_BS:-256}" --steps "${BENCH_STEPS:-50}" --warmup "${BENCH_WARMUP:-10}" \
  --only "$ONLY" --json "$BENCH_JSON" "${CMP[@]}" "${SPEED[@]}"
t_bench=$(date +%s)

# the preset: the seed recipe if the measured throughput fits it into BUDGET_S, else gpu10min (what it cuts: recipes.PRESETS)
if [ -z "${PRESET:-}" ]; then
  PRESET=$("$PY" - "$BENCH_JSON" "$BUDGET_S" <<'PYEOF'
import json, sys
from fastai_simclr.bench import fit_preset
vps = json.load(open(sys.argv[1]))['ours']['views_per_s']   # ours with the speed options reproduce runs with
name, est = fit_preset(vps, float(sys.argv[2]))
print(f"{vps:.0f} views/s: " + ', '.join(f"{k} ~{v:.0f}s" for k,v in est.items()) + f" -> {name}", file=sys.stderr)
print(name)
PYEOF
)
fi
OUT="${OUT:-runs/$PRESET-${DEVICE%%:*}}"
echo "gpu_reproduce: preset $PRESET -> $OUT"
"$PY" -m fastai_simclr.cli reproduce --preset "$PRESET" --device "$DEVICE" --out "$OUT" --yes "${SPEED[@]}"
t_end=$(date +%s)
cp "$BENCH_JSON" "$OUT/bench.json"
printf 'device %s, preset %s\nbenchmark %ss, reproduce %ss, total %ss\n' "$DEVICE" "$PRESET" $((t_bench-t0)) $((t_end-t_bench)) $((t_end-t0)) | tee "$OUT/timing.txt"

# the label-efficiency sweep (issue #16) with the reproduce run's encoder: no second pre-training
if [ "${SWEEP:-0}" = 1 ]; then
  "$PY" -m fastai_simclr.cli sweep --preset "$PRESET" --device "$DEVICE" --encoder "$OUT" --out "$OUT-sweep" \
    --fracs "${SWEEP_FRACS:-0.01,0.05,0.1,0.3,1}" --max-fold-labels "${SWEEP_FOLD_LABELS:-60000}" --yes "${SPEED[@]}"
  t_sweep=$(date +%s)
  printf 'device %s, preset %s, sweep %ss\n' "$DEVICE" "$PRESET" $((t_sweep-t_end)) | tee "$OUT-sweep/timing.txt"
fi
