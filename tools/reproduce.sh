#!/usr/bin/env bash
# The main job: installs fastai_simclr, then runs the SimCLR-vs-baseline experiment (quick preset unless told otherwise).
# Arguments go to `fastai-simclr reproduce`, e.g. `--preset seed --yes`, `--data DIR`, `--out DIR`.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/install.sh
source tools/data.sh
exec fastai-simclr reproduce --preset quick "$@"
