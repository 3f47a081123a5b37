#!/usr/bin/env bash
# The CPU dry run that proves the GPU bundle: bench/gpu_reproduce.sh run as the device would run it, from a copy of the
# working tree plus bundle/ and nothing beside it, in a Python holding only the device image's packages (no fastai), with a
# bare HOME and pip kept off every registry and every local wheel folder (PIP_NO_INDEX=1, PIP_CONFIG_FILE=/dev/null).
#
#   PY_VERSIONS="3.12 3.11" bash bench/gpu_bundle.sh   # the bundle, with the compiled wheels of this machine's Python too
#   bash bench/gpu_dryrun.sh                          # DEVICE=cpu PRESET=smoke; prints the files that came back to OUT
#
# The image's packages live in IMAGE_VENV (/tmp/venv-gpuimage), made once from this machine's pip configuration
# (torch 2.14.1, torchvision 0.29.1, timm, scikit-learn, matplotlib, pillow, pandas, scipy, safetensors, accelerate: ~5 GB,
# about a minute from local wheels) and never written to: each dry run adds a thin venv on top of it (a .pth file), into which
# the bundle installs fastai. Environment: IMAGE_VENV, WORK (a fresh temporary folder), DEVICE (cpu), PRESET (smoke),
# KEEP=1 (keep WORK).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
IMAGE_VENV="${IMAGE_VENV:-/tmp/venv-gpuimage}"
[ -f bundle/fastai.txt ] && [ -d bundle/wheels ] && [ -f bundle/data/cifar10-jpg.tar.gz ] \
  || { echo "gpu_dryrun: no bundle; run PY_VERSIONS=\"3.12 3.11\" bash bench/gpu_bundle.sh first" >&2; exit 2; }
if [ ! -x "$IMAGE_VENV/bin/python" ]; then
  echo "gpu_dryrun: making $IMAGE_VENV (the device image's packages, no fastai)"
  python3 -m venv "$IMAGE_VENV"
  "$IMAGE_VENV/bin/pip" install -q torch==2.14.1 torchvision==0.29.1 timm scikit-learn matplotlib pillow pandas scipy safetensors accelerate
fi
if "$IMAGE_VENV/bin/python" -c "import fastai" 2>/dev/null; then echo "gpu_dryrun: $IMAGE_VENV holds fastai: not the device image" >&2; exit 2; fi

WORK="${WORK:-$(mktemp -d /tmp/gpu_dryrun.XXXXXX)}"
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/home" "$WORK/tmp" "$WORK/out" "$WORK/repo"
# the working tree as the device tool carries it: tracked and not-ignored files, plus the carried bundle/
git ls-files -z --cached --others --exclude-standard | xargs -0 -I{} cp --parents -d {} "$WORK/repo/" 2>/dev/null || true
cp -r bundle "$WORK/repo/bundle"
# a thin venv that sees the image's packages and receives the install
python3 -m venv --without-pip "$WORK/py"
site=$("$WORK/py/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
"$IMAGE_VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > "$site/gpu_image.pth"
if "$WORK/py/bin/python" -c "import fastai" 2>/dev/null; then echo "gpu_dryrun: fastai importable before the install" >&2; exit 2; fi

t0=$(date +%s); rc=0
env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$WORK/home" TMPDIR="$WORK/tmp" LANG=C.UTF-8 \
    PIP_NO_INDEX=1 PIP_CONFIG_FILE=/dev/null PYTHON="$WORK/py/bin/python" OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" \
    DEVICE="${DEVICE:-cpu}" PRESET="${PRESET:-smoke}" OUT="$WORK/out" BENCH_BS="${BENCH_BS:-16}" BENCH_STEPS="${BENCH_STEPS:-2}" \
    BENCH_WARMUP="${BENCH_WARMUP:-1}" bash "$WORK/repo/bench/gpu_reproduce.sh" || rc=$?
echo "gpu_dryrun: gpu_reproduce.sh exited $rc after $(( $(date +%s) - t0 ))s; fastai from: $("$WORK/py/bin/python" -c 'import fastai, os; print(os.path.dirname(fastai.__file__))' 2>&1)"
echo "gpu_dryrun: OUT holds $(ls -A "$WORK/out" | wc -l) files: $(ls -A "$WORK/out" | tr '\n' ' ')"
"$WORK/py/bin/python" - "$WORK/out" <<'PYEOF' || rc=5
import json, sys, pathlib
out = pathlib.Path(sys.argv[1]); files = sorted(p.name for p in out.iterdir())
assert len(files) <= 8, f"{len(files)} files in OUT: {files}"
assert {'results.json', 'report.md'} <= set(files), files
res = json.loads((out/'results.json').read_text())
assert 'status' not in res and res['baseline']['n_folds'] >= 1, "results.json is not a complete run's"
print(f"gpu_dryrun: ok: a complete {res['preset']['name']} run, fine-tune validation accuracy {100*res['finetune']['final']['accuracy']['mean']:.1f}%")
PYEOF
exit $rc
