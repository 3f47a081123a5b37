#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test (nbdev-test on the notebooks, then pytest).
# Prints the CPU kind first and each stage's duration as it ends (a summary again at the end, also after a failure).
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
_stages=() _t0=$SECONDS _t=$SECONDS _stage=install
stage_done() { _stages+=("$(printf '%-14s %5d s' "$1" $((SECONDS - _t)))"); echo "== $1 took $((SECONDS - _t)) s"; _t=$SECONDS; _stage=$2; }
summary() {
  echo "== stage durations (CPU: ${_cpu:-see above})"; printf '   %s\n' "${_stages[@]}"
  [ -n "$_stage" ] && printf '   %-14s %5d s (did not finish)\n' "$_stage" $((SECONDS - _t))
  echo "   total          $((SECONDS - _t0)) s"
}
trap summary EXIT
_cpu="$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//'), $(grep -q -w -E 'avx512_bf16|amx_bf16' /proc/cpuinfo 2>/dev/null && echo 'with native bf16 (AVX512-BF16/AMX)' || echo 'without native bf16: the bf16 measurements skip')"
echo "== CPU: $_cpu; $(nproc) cores"
DEV=1 source tools/install.sh
[ -f tools/install_chromium.sh ] && bash tools/install_chromium.sh
stage_done install data
source tools/data.sh
stage_done data nbdev-test
"$PY" -c "from fastai_simclr.speed import cpu_kind; print('== torch sees:', cpu_kind())"
echo "== nbdev-test"
nbdev-test --timing
stage_done nbdev-test pytest
echo "== pytest"
"$PY" -m pytest tests --durations=15 "$@"
stage_done pytest ""
