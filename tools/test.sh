#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test (nbdev-test on the notebooks, then pytest).
# Prints the CPU kind first and each stage's duration as it ends (a summary again at the end, also after a failure).
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
_stages=() _t0=$SECONDS _t=$SECONDS _stage=install
stage_done() { _stages+=("$(printf '%-14s %5d s' "$1" $((SECONDS - _t)))"); echo "== $1 took $((SECONDS - _t)) s"; disk; _t=$SECONDS; _stage=$2; }
summary() {
  echo "== stage durations (CPU: ${_cpu:-see above})"; printf '   %s\n' "${_stages[@]}"
  [ -n "$_stage" ] && printf '   %-14s %5d s (did not finish)\n' "$_stage" $((SECONDS - _t))
  echo "   total          $((SECONDS - _t0)) s"
}
# Everything the tests and notebooks write to a temporary folder goes under one scratch folder, deleted at the end.
_scratch="$(mktemp -d "${TMPDIR:-/tmp}/fastai_simclr_test.XXXXXX")"
_peak="$_scratch.peak"; echo 0 > "$_peak"
gib() { awk '{printf "%.1f GiB", $1/1048576}'; }
disk() { echo "== disk: $(df -Pk "$_scratch" | awk 'NR==2 {print $4}' | gib) free; the scratch folder holds $(du -sk "$_scratch" 2>/dev/null | cut -f1 | gib), at most $(gib < "$_peak") so far"; }
watch_disk() { local k; while sleep 5; do k=$(du -sk "$_scratch" 2>/dev/null | cut -f1); [ "${k:-0}" -gt "$(cat "$_peak")" ] && echo "$k" > "$_peak"; done; }
watch_disk & _watch=$!
finish() { kill "$_watch" 2>/dev/null || true; summary; disk; rm -rf "$_scratch" "$_peak"; }
trap finish EXIT
export TMPDIR="$_scratch"
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
