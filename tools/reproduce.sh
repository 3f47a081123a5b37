#!/usr/bin/env bash
# The main job: installs fastai_simclr, then runs the SimCLR-vs-baseline experiment: the quick preset (under 10 minutes on a
# 2-core CPU) unless told otherwise, e.g. `--preset cpu1h` (about an hour: all 5 folds, paired intervals, linear probe) or
# `--preset seed --yes` (the published recipe, meant for a GPU). Arguments go to `fastai-simclr reproduce` (`--data DIR`,
# `--out DIR`, any preset setting: see `fastai-simclr reproduce --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/install.sh
source tools/data.sh
echo "reproduce.sh: fastai-simclr reproduce --preset quick $* (each phase says what it trains and how long it will take)"
exec fastai-simclr reproduce --preset quick "$@"
